"""Champion and challenger traffic, decided in the live color: a *shadow* challenger gets a copy of a share of the
clients' scoring requests after the live answer is sent and its answers are only logged; a *split* challenger
answers a sticky share of them itself.

Why in the live color and not a proxy in front of it: the stable URL is one listening socket that the live color
accepts on (handoff.py); there is no proxy hop to put a router in, and adding one would put a second process in
every request's path. The challenger is a color of its own (the idle one: its own process, its own serving
environment, its own prediction log), reached on its private port over loopback. Whatever it does costs the
clients nothing: a shadow copy waits in a bounded queue and is dropped (and counted) when the shadow falls
behind, fails or is gone; a split request the challenger does not answer in time, or answers with a 5xx, is
answered by the champion (counted as a fallback). The platform's own probes (probe key) always reach the
champion: its gates and checks judge what they deployed.

Sticky: a request is in the split's share by a hash of the client's `X-Subject-ID` (else its request id) and
the challenger's version, so one subject meets one version for the whole experiment, and a new experiment
draws a new share. Every answer names the version that answered (`model_version`, `X-Model-Version`).

The route is set by the endpoint's supervisor with the color's `route` control command (handoff.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fin_behavior.serving.traffic")
MODES = ("shadow", "split")
SUBJECT_HEADER = "X-Subject-ID"
SHADOW_QUEUE = 256  # copies waiting for the shadow; past it a copy is dropped: the live color never waits
SHADOW_SENDERS = 4  # copies in flight to the shadow at once
_ANSWER_BYTES = 4 << 20  # the most read of one challenger answer (a split request's answer is relayed whole)
_FORWARDED = ("x-api-key", "authorization", "x-request-id", "x-subject-id", "content-type")


@dataclass(frozen=True)
class Route:
    """Where the challenger is and what it gets: `share` of the clients' /score requests, within `timeout`."""

    mode: str
    version: str
    port: int
    share: float
    timeout: float

    @classmethod
    def parse(cls, text: str) -> Route | None:
        """A route command's argument: `none`, or the route as JSON; ValueError saying what is wrong."""
        if text.strip() == "none":
            return None
        fields = json.loads(text)
        route = cls(
            str(fields["mode"]), str(fields["version"]), int(fields["port"]), float(fields["share"]),
            float(fields["timeout"]),
        )  # fmt: skip
        if route.mode not in MODES:
            raise ValueError(f"unknown challenger mode {route.mode!r}: one of {', '.join(MODES)}")
        if not 0.0 < route.share <= 1.0 or not route.timeout > 0:
            raise ValueError(f"a challenger's share must be in (0, 1] and its timeout > 0, not {fields}")
        return route


def in_share(key: str, version: str, share: float) -> bool:
    """Whether the subject (or request) `key` falls in a challenger's share: the same answer for the same key and
    version, independent of anything else (no state to lose on a restart)."""
    digest = hashlib.sha256(f"{version}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2.0**64


@dataclass(frozen=True)
class Relayed:
    """The challenger's answer to a split request, passed to the client as it came."""

    status: int
    body: bytes
    version: str


class ChallengerTraffic:
    """The live color's side of an experiment. All methods run on the service's event loop."""

    def __init__(self, registry: Any):
        from prometheus_client import Counter

        self.route: Route | None = None
        self.counts = Counter(
            "fin_behavior_challenger_requests",
            "Client requests given to the challenger, by mode and outcome (shadow: copied, dropped, failed; "
            "split: answered, fallback)",
            ["mode", "outcome", "version"],
            registry=registry,
        )
        self._client: Any = None
        self._queue: asyncio.Queue | None = None
        self._senders: list[asyncio.Task] = []

    async def set_route(self, route: Route | None) -> None:
        """Start (or change, or end with None) the experiment. The HTTP client is imported here: a color that
        never routes never loads it."""
        await self.close()
        if route is None:
            log.info("challenger traffic ended")
            return
        import httpx

        limits = httpx.Limits(max_connections=SHADOW_SENDERS * 4, max_keepalive_connections=SHADOW_SENDERS * 4)
        self._client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{route.port}", timeout=route.timeout, limits=limits, trust_env=False
        )
        if route.mode == "shadow":
            self._queue = asyncio.Queue(SHADOW_QUEUE)
            self._senders = [asyncio.create_task(self._send_copies()) for _ in range(SHADOW_SENDERS)]
        self.route = route
        log.info("challenger v%s: %s of %.0f%% of the clients' requests", route.version, route.mode, route.share * 100)

    async def close(self) -> None:
        self.route = None
        for task in self._senders:
            task.cancel()
        self._senders, self._queue = [], None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    def wants(self, mode: str, request_id: str, subject: str) -> bool:
        route = self.route
        return route is not None and route.mode == mode and in_share(subject or request_id, route.version, route.share)

    async def answer(self, raw: bytes, headers: list[tuple[bytes, bytes]], request_id: str) -> Relayed | None:
        """The challenger's answer to a split request, or None when the champion must answer it instead (no
        answer within the timeout, a refused connection, a 5xx, an answer past the size bound)."""
        route = self.route
        assert route is not None and self._client is not None
        try:
            status, body = await self._post(raw, headers, request_id)
        except Exception as exc:  # whatever went wrong, the client still gets an answer: the champion's
            log.warning("split request %s: challenger v%s did not answer (%s); the champion answers", request_id,
                        route.version, exc)  # fmt: skip
            status, body = 0, b""
        if status == 0 or status >= 500:
            self.counts.labels("split", "fallback", route.version).inc()
            return None
        self.counts.labels("split", "answered", route.version).inc()
        return Relayed(status, body, route.version)

    def copy(self, raw: bytes, headers: list[tuple[bytes, bytes]], request_id: str) -> None:
        """Queue a copy of an answered request for the shadow; dropped (counted) when the queue is full."""
        route, queue = self.route, self._queue
        if route is None or queue is None:
            return
        try:
            queue.put_nowait((raw, headers, request_id))
        except asyncio.QueueFull:
            self.counts.labels("shadow", "dropped", route.version).inc()

    async def _send_copies(self) -> None:
        assert self._queue is not None and self.route is not None
        queue, version = self._queue, self.route.version
        while True:
            raw, headers, request_id = await queue.get()
            try:
                status, _ = await self._post(raw, headers, request_id)
                outcome = "failed" if status >= 500 else "copied"
            except asyncio.CancelledError:
                raise
            except Exception:  # gone, slow, reset: the copy is lost, the live traffic is not
                outcome = "failed"
            self.counts.labels("shadow", outcome, version).inc()

    async def _post(self, raw: bytes, headers: list[tuple[bytes, bytes]], request_id: str) -> tuple[int, bytes]:
        """POST /score to the challenger with the client's own key, request id and subject: its prediction log
        then holds its decision under the same id as the champion's (monitoring pairs them by it)."""
        sent = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _FORWARDED_BYTES}
        sent["x-request-id"] = request_id
        async with self._client.stream("POST", "/score", content=raw, headers=sent) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _ANSWER_BYTES:
                    raise ValueError(f"the challenger's answer is larger than {_ANSWER_BYTES} bytes")
            return response.status_code, bytes(body)


_FORWARDED_BYTES = frozenset(name.encode() for name in _FORWARDED)
