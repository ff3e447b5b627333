"""Champion and challenger traffic, decided in the live color: a *shadow* challenger gets a copy of a share of the
clients' scoring requests after the live answer is sent and its answers are only logged; a *split* challenger
answers a sticky share of them itself.

Why in the live color and not a proxy in front of it: the stable URL is one listening socket that the live color
accepts on (handoff.py); there is no proxy hop to put a router in, and adding one would put a second process in
every request's path. The challenger is a color of its own (the idle one: its own process, its own serving
environment, its own prediction log). Whatever it does costs the clients nothing. A shadow copy is one
non-blocking send on a sequenced-packet socket pair the supervisor made for the experiment (the live color holds
one end, the shadow the other): a copy that does not fit the socket's buffer, because the shadow fell behind or is
gone, is dropped and counted, never waited for. A split request goes to the challenger's private port over
loopback; one it does not answer in time, or answers with a 5xx, is answered by the champion (counted as a
fallback). The platform's own probes (probe key) always reach the
champion: its gates and checks judge what they deployed.

Sticky: a request is in the split's share by a hash of the client's `X-Subject-ID` (else its request id) and
the challenger's version, so one subject meets one version for the whole experiment, and a new experiment
draws a new share. Every answer names the version that answered (`model_version`, `X-Model-Version`).

The route is set by the endpoint's supervisor with the color's `route` control command (handoff.py).

Why a socket pair for the copies and not HTTP: a copy is work the live color does for every request, on its own
CPU. Copies sent over HTTP with httpx measured 1.1 ms of the live color's CPU per copy here, twice what answering
the request costs; with h11 on kept-alive connections still 0.23 ms (+45%); one send() is a few microseconds
(benchmarks/shadow.py). The shadow scores a copy through the same code as a POST /score and logs it under the
live request's id and client (the key that asked: its labels join both versions' decisions); its latency figure
is then its scoring time, without HTTP. A split's requests do go over HTTP (h11, the HTTP/1.1 state machine
uvicorn itself uses, already in the serving environment): the challenger's answer, status and body, is what the
client gets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fin_behavior.serving.traffic")
MODES = ("shadow", "split")
SUBJECT_HEADER = "X-Subject-ID"
COPIES_BUFFER = 4 << 20  # bytes of copies the socket pair holds for the shadow (capped by net.core.wmem_max)
_COPIES_PER_WAKEUP = 64  # copies the shadow scores before its event loop serves anything else (/ready)
SPLIT_CONNECTIONS = 32  # split requests at the challenger at once; past it the champion answers at once
EXPLAIN_CONNECTIONS = 4  # explanations asked of a split's challenger at once, on connections (and a breaker) of
# their own: however /explain is used, it never takes a split request's connection nor makes /score fall back
_TRIP_AFTER, _REST_SECONDS = 8, 5.0  # failures in a row after which the challenger rests (the champion answers)
_IDLE_SECONDS = 4.0  # a kept-alive connection idle longer is not reused: uvicorn closes them at 5 s
_ANSWER_BYTES = 4 << 20  # the most read of one challenger answer (a split request's answer is relayed whole)
_FORWARDED = ("x-api-key", "authorization", "x-subject-id", "content-type")  # and the request's id, as answered


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
            "Client requests given to the challenger, by mode and outcome (shadow: copied, dropped; split: "
            "answered, fallback)",
            ["mode", "outcome", "version"],
            registry=registry,
        )
        self._pool: _Pool | None = None
        self._explain_pool: _Pool | None = None
        self._copies: socket.socket | None = None

    async def set_route(self, route: Route | None, copies: socket.socket | None = None) -> None:
        """Start (or change, or end with None) the experiment; a shadow's route comes with the live color's end of
        the copies socket pair."""
        await self.close()
        if route is None:
            if copies is not None:
                copies.close()
            log.info("challenger traffic ended")
            return
        if route.mode == "shadow":
            if copies is None:
                raise ValueError("a shadow's route needs the copies socket (passed with the command)")
            copies.setblocking(False)
            self._copies = copies
        else:
            self._pool = _Pool(route.port, SPLIT_CONNECTIONS)
            self._explain_pool = _Pool(route.port, EXPLAIN_CONNECTIONS)
        self.route = route
        log.info("challenger v%s: %s of %.0f%% of the clients' requests", route.version, route.mode, route.share * 100)

    async def close(self) -> None:
        self.route = None
        if self._copies is not None:
            self._copies.close()
            self._copies = None
        for pool in (self._pool, self._explain_pool):
            if pool is not None:
                pool.close()
        self._pool = self._explain_pool = None

    @property
    def splitting(self) -> bool:
        """Whether a split challenger answers a share of the requests now."""
        return self.route is not None and self.route.mode == "split"

    def wants(self, mode: str, request_id: str, subject: str) -> bool:
        route = self.route
        return route is not None and route.mode == mode and in_share(subject or request_id, route.version, route.share)

    async def answer(self, raw: bytes, headers: list[tuple[bytes, bytes]], request_id: str) -> Relayed | None:
        """The challenger's answer to a split request, or None when the champion must answer it instead (no
        answer within the timeout, a refused connection, a 5xx, an answer past the size bound)."""
        route = self.route
        if route is None or route.mode != "split":  # the experiment ended (or changed) while the body arrived
            return None
        try:
            status, body, version = await self._post(raw, headers, request_id)
        except ChallengerBusy:
            status, body, version = 0, b"", None
        except Exception as exc:  # whatever went wrong, the client still gets an answer: the champion's
            log.warning("split request %s: challenger v%s did not answer (%s: %s); the champion answers",
                        request_id, route.version, type(exc).__name__, exc)  # fmt: skip
            status, body, version = 0, b"", None
        if status == 0 or status >= 500:
            self.counts.labels("split", "fallback", route.version).inc()
            return None
        self.counts.labels("split", "answered", route.version).inc()
        return Relayed(status, body, version or route.version)

    def copy(self, raw: bytes, request_id: str, client: str) -> None:
        """Hand a copy of an answered request (and who asked: the `client_id` of its key) to the shadow, or drop it
        (counted): a full buffer (the shadow is behind), a shadow that is gone, a body larger than the buffer.
        Never waits."""
        route, copies = self.route, self._copies
        if route is None or copies is None:
            return
        try:
            # request ids and client names hold neither space nor newline (request_ids.py, prediction_log.client_id)
            copies.send(b"%s %s\n%s" % (request_id.encode(), client.encode(), raw))
            outcome = "copied"
        except OSError:  # BlockingIOError (full), BrokenPipeError (gone), EMSGSIZE (too large)
            outcome = "dropped"
        self.counts.labels("shadow", outcome, route.version).inc()

    async def _post(
        self, raw: bytes, headers: list[tuple[bytes, bytes]], request_id: str
    ) -> tuple[int, bytes, str | None]:
        """POST /score to the challenger with the client's own key, request id and subject: its prediction log
        then holds its decision under the same id and client as the champion's (monitoring pairs them by both)."""
        route, pool = self.route, self._pool
        assert route is not None and pool is not None
        sent = [(k, v) for k, v in headers if k in _FORWARDED_BYTES]
        sent += [(b"host", b"challenger"), (b"x-request-id", request_id.encode())]
        sent.append((b"content-length", b"%d" % len(raw)))
        async with asyncio.timeout(route.timeout):
            return await pool.ask(b"POST", b"/score", sent, raw)

    async def explanation(
        self, request_id: str, query: bytes, headers: list[tuple[bytes, bytes]], timeout: float
    ) -> Relayed | None:
        """The challenger's answer to GET /explain/{request_id} asked with the client's own key (it finds only that
        client's decisions, as the champion does): a split request it answered is explained by the model that
        decided it. None when no split runs, or the challenger does not answer."""
        route, pool = self.route, self._explain_pool
        if route is None or pool is None:  # no split runs (only a split has this pool)
            return None
        sent = [(k, v) for k, v in headers if k in _FORWARDED_BYTES] + [(b"host", b"challenger")]
        target = b"/explain/%s%s" % (request_id.encode(), b"?" + query if query else b"")
        try:
            async with asyncio.timeout(timeout):
                status, body, version = await pool.ask(b"GET", target, sent, b"")
        except Exception as exc:  # the champion's own answer stands
            log.warning("explaining %s: challenger v%s did not answer (%s)", request_id, route.version, exc)
            return None
        return Relayed(status, body, version or route.version)


def receive_copies(copies: socket.socket, score: Callable[[str, str, bytes], None]) -> None:
    """The shadow's side: score each copy that arrives (`score(request_id, client, body)`) on the running event
    loop, a bounded number per wakeup. What arrives comes from the live color through the supervisor's socket
    pair."""
    copies.setblocking(False)
    loop = asyncio.get_running_loop()

    def drain() -> None:
        for _ in range(_COPIES_PER_WAKEUP):
            try:
                message = copies.recv(1 << 21)
            except BlockingIOError:
                return
            except OSError:  # the live color's end is closed: the experiment is over
                loop.remove_reader(copies)
                copies.close()
                return
            if not message:
                loop.remove_reader(copies)
                copies.close()
                return
            head, _, body = message.partition(b"\n")
            request_id, _, client = head.partition(b" ")
            score(request_id.decode("ascii", "replace"), client.decode("ascii", "replace"), body)

    loop.add_reader(copies, drain)


_FORWARDED_BYTES = frozenset(name.encode() for name in _FORWARDED)


class _ClosedBeforeAnswer(Exception):
    """The challenger closed the connection before any answer: nothing of the request was acted on by it."""


class ChallengerBusy(Exception):
    """Every connection to the challenger is in use, or it is resting after failures: the champion answers."""


class _Pool:
    """Kept-alive HTTP/1.1 connections to the challenger's private port, one request at a time each (h11). It never
    makes a request wait for a connection (a busy pool is a fallback at once), so requests stalled on a stalled
    challenger hold at most `size` of the service's queue places; after `_TRIP_AFTER` failures in a row it rests
    `_REST_SECONDS` (the champion answers without asking), then tries again."""

    def __init__(self, port: int, size: int):
        self.port, self.size, self.busy, self.closed = port, size, 0, False
        self.idle: list[tuple[float, Any, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.failures, self.resting_until = 0, 0.0

    async def ask(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes, str | None]:
        """(status, body, the version its X-Model-Version names) of one request."""
        loop = asyncio.get_running_loop()
        if self.busy >= self.size or loop.time() < self.resting_until:
            raise ChallengerBusy(f"{self.busy} of {self.size} connections in use, or resting after failures")
        self.busy += 1
        try:
            answer = await self._ask(method, target, headers, body)
        except BaseException:
            self.failures += 1
            if self.failures >= _TRIP_AFTER:
                self.resting_until = loop.time() + _REST_SECONDS
            raise
        finally:
            self.busy -= 1
        self.failures = 0 if answer[0] < 500 else self.failures + 1
        return answer

    async def _ask(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, bytes, str | None]:
        import h11

        now, connection = asyncio.get_running_loop().time(), None
        while self.idle and connection is None:  # the newest one the challenger has not closed (it does at 5 s idle)
            used, *kept = self.idle.pop()
            if now - used < _IDLE_SECONDS:
                connection = kept
            else:
                kept[2].close()
        reused = connection is not None
        while True:
            state, reader, writer = connection or await self._open()
            try:
                request = h11.Request(method=method, target=target, headers=headers)
                return await self._exchange(h11, state, reader, writer, request, body)
            except _ClosedBeforeAnswer:
                writer.close()
                if not reused:
                    raise ConnectionError("the challenger closed the connection before answering") from None
                reused, connection = False, None  # a kept-alive one closed under us: once more, on a fresh one
            except BaseException:  # a connection in an unknown state is never reused
                writer.close()
                raise

    async def _exchange(self, h11, state, reader, writer, request, body) -> tuple[int, bytes, str | None]:
        out = state.send(request)
        writer.write(out + (state.send(h11.Data(data=body)) if body else b"") + state.send(h11.EndOfMessage()))
        status, version, answer = 0, None, bytearray()
        while True:
            try:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    state.receive_data(await reader.read(65536))
                    continue
            except (h11.RemoteProtocolError, ConnectionError) as exc:
                if status == 0:  # nothing answered yet: the request may be sent again
                    raise _ClosedBeforeAnswer() from exc
                raise
            if isinstance(event, h11.Response):
                status = event.status_code
                version = next((v.decode("latin-1") for k, v in event.headers if k == b"x-model-version"), None)
            elif isinstance(event, h11.Data):
                answer += event.data
                if len(answer) > _ANSWER_BYTES:
                    raise ValueError(f"the challenger's answer is larger than {_ANSWER_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the challenger closed the connection")
        if state.our_state is h11.DONE and state.their_state is h11.DONE and not self.closed:
            state.start_next_cycle()
            self.idle.append((asyncio.get_running_loop().time(), state, reader, writer))
        else:
            writer.close()
        return status, bytes(answer), version

    async def _open(self):
        import h11

        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return h11.Connection(h11.CLIENT, max_incomplete_event_size=64 << 10), reader, writer

    def close(self) -> None:
        """Close the kept connections; one still answering is closed when its answer is in (never kept)."""
        self.closed = True
        for *_, writer in self.idle:
            writer.close()
        self.idle = []
