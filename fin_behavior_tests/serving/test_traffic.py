"""The live color's side of a challenger (serving/traffic.py), against a real HTTP server standing in for the
challenger's color: what is relayed, what falls back to the champion, what a shadow drops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry

from fin_behavior.serving.prediction_log import client_id
from fin_behavior.serving.traffic import (
    EXPLAIN_CONNECTIONS,
    SPLIT_CONNECTIONS,
    ChallengerTraffic,
    Route,
    in_share,
    receive_copies,
)

HEADERS = [(b"x-api-key", b"k" * 20), (b"x-request-id", b"client-id"), (b"cookie", b"not forwarded")]


class Challenger(ThreadingHTTPServer):
    """Answers POST /score with `status` after `delay` seconds, GET /explain/{id} after `explain_delay`; remembers
    what it was sent."""

    status, delay, received, closes_after_answer, explain_delay = 200, 0.0, None, False, 0.0

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[dict, bytes]] = []


class _Handler(BaseHTTPRequestHandler):
    server: Challenger
    protocol_version = "HTTP/1.1"  # keeps connections alive, as uvicorn does

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        time.sleep(self.server.delay)
        answer = json.dumps({"model_version": "2", "request_id": self.headers["X-Request-ID"]}).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up on a slow answer
            self.send_response(self.server.status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        self.close_connection = self.server.closes_after_answer  # without saying so, as an idle timeout does

    def do_GET(self) -> None:
        self.server.received.append((dict(self.headers), self.path.encode()))
        time.sleep(self.server.explain_delay)
        answer = json.dumps({"model_version": "2", "request_id": self.path.split("?")[0].rsplit("/", 1)[-1]}).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    def log_message(self, *_) -> None:
        pass


@pytest.fixture
def challenger() -> Iterator[Challenger]:
    server = Challenger()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _route(mode: str, port: int, share: float = 1.0, timeout: float = 0.5) -> Route:
    return Route(mode, "2", port, share, timeout)


def _count(traffic: ChallengerTraffic, mode: str, outcome: str) -> float:
    return traffic.counts.labels(mode, outcome, "2")._value.get()


def test_a_split_request_is_answered_by_the_challenger_with_the_clients_key_and_request_id(challenger):
    async def run():
        traffic = ChallengerTraffic(CollectorRegistry())
        await traffic.set_route(_route("split", challenger.server_address[1]))
        relayed = await traffic.answer(b"[{}]", HEADERS, "req-1")
        await traffic.close()
        return traffic, relayed

    traffic, relayed = asyncio.run(run())
    assert relayed is not None and relayed.status == 200 and relayed.version == "2"
    assert json.loads(relayed.body) == {"model_version": "2", "request_id": "req-1"}
    headers, body = challenger.received[0]
    assert body == b"[{}]" and headers["x-api-key"] == "k" * 20 and headers["x-request-id"] == "req-1"
    assert "cookie" not in {name.lower() for name in headers}  # only what the challenger needs is forwarded
    assert _count(traffic, "split", "answered") == 1


@pytest.mark.parametrize(
    "status, delay, reachable", [(500, 0.0, True), (200, 2.0, True), (200, 0.0, False)], ids=["5xx", "slow", "gone"]
)
def test_a_split_request_the_challenger_does_not_answer_well_falls_back_to_the_champion(
    challenger, status, delay, reachable
):
    challenger.status, challenger.delay = status, delay
    port = challenger.server_address[1]
    if not reachable:
        challenger.shutdown()
        challenger.server_close()

    async def run():
        traffic = ChallengerTraffic(CollectorRegistry())
        await traffic.set_route(_route("split", port, timeout=0.3))
        started = time.monotonic()
        relayed = await traffic.answer(b"[{}]", HEADERS, "req-1")
        await traffic.close()
        return traffic, relayed, time.monotonic() - started

    traffic, relayed, took = asyncio.run(run())
    assert relayed is None and took < 1.5  # the champion answers, after at most the timeout (the slow one takes 2 s)
    assert _count(traffic, "split", "fallback") == 1 and _count(traffic, "split", "answered") == 0


def test_a_stalled_challenger_holds_at_most_its_connections_and_then_rests(challenger):
    """Split requests never wait for a connection: past SPLIT_CONNECTIONS at the challenger the champion answers at
    once, and after failures in a row the challenger is not asked for a while."""
    challenger.delay = 0.6

    async def run():
        traffic = ChallengerTraffic(CollectorRegistry())
        await traffic.set_route(_route("split", challenger.server_address[1], timeout=0.3))
        started = time.monotonic()
        answers = await asyncio.gather(*(traffic.answer(b"[]", HEADERS, f"r{n}") for n in range(SPLIT_CONNECTIONS + 8)))
        took = time.monotonic() - started
        asked = len(challenger.received)
        again = await traffic.answer(b"[]", HEADERS, "after")  # resting: not sent
        await traffic.close()
        return traffic, answers, took, asked, again

    traffic, answers, took, asked, again = asyncio.run(run())
    assert all(answer is None for answer in answers) and took < 0.6  # the timeout, not the stalled answers
    assert _count(traffic, "split", "fallback") == SPLIT_CONNECTIONS + 9
    time.sleep(0.1)
    assert asked <= SPLIT_CONNECTIONS and len(challenger.received) == asked and again is None


def test_explanations_asked_of_a_stalled_challenger_never_take_the_split_s_connections_nor_trip_its_rest(challenger):
    """A client asking /explain for ids the champion has not got, over and over, while the challenger's explanations
    stall: at most EXPLAIN_CONNECTIONS of those are at the challenger at once, and split requests still reach it
    (before, the relays shared the split's connections and failures: eight of them made /score fall back for 5 s)."""
    challenger.explain_delay = 1.0

    async def run():
        traffic = ChallengerTraffic(CollectorRegistry())
        await traffic.set_route(_route("split", challenger.server_address[1]))
        asked = [traffic.explanation(f"unknown-{n}", b"top=2", HEADERS, 0.3) for n in range(EXPLAIN_CONNECTIONS + 12)]
        explained = await asyncio.gather(*asked)
        at_challenger = sum(path.startswith(b"/explain/") for _, path in challenger.received)
        split = await traffic.answer(b"[{}]", HEADERS, "after-the-flood")
        await traffic.close()
        return explained, at_challenger, split

    explained, at_challenger, split = asyncio.run(run())
    assert explained == [None] * (EXPLAIN_CONNECTIONS + 12)  # not answered in time: the champion's answer stands
    assert at_challenger <= EXPLAIN_CONNECTIONS
    assert split is not None and split.status == 200 and json.loads(split.body)["request_id"] == "after-the-flood"


def test_an_explanation_relayed_to_the_challenger_carries_the_clients_key_and_query(challenger):
    async def run():
        traffic = ChallengerTraffic(CollectorRegistry())
        await traffic.set_route(_route("split", challenger.server_address[1]))
        relayed = await traffic.explanation("req-7", b"top=2", HEADERS, 5)
        await traffic.close()
        return relayed

    relayed = asyncio.run(run())
    assert relayed is not None and relayed.status == 200 and json.loads(relayed.body)["request_id"] == "req-7"
    headers, path = challenger.received[0]
    assert path == b"/explain/req-7?top=2" and headers["x-api-key"] == "k" * 20
    assert "cookie" not in {name.lower() for name in headers}


def test_a_kept_alive_connection_the_challenger_closed_is_retried_on_a_fresh_one():
    """The challenger's server closes idle connections (uvicorn at 5 s): a request on one is sent again, not lost."""
    server = Challenger()
    server.closes_after_answer = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def run():
        traffic = ChallengerTraffic(CollectorRegistry())
        await traffic.set_route(_route("split", server.server_address[1]))
        answers = [await traffic.answer(b"[]", HEADERS, f"r{n}") for n in range(3)]
        await traffic.close()
        return traffic, answers

    try:
        traffic, answers = asyncio.run(run())
    finally:
        server.shutdown()
        server.server_close()
    assert all(answer is not None and answer.status == 200 for answer in answers)
    assert _count(traffic, "split", "answered") == 3 and _count(traffic, "split", "fallback") == 0


def test_a_split_request_whose_experiment_ended_while_its_body_arrived_is_the_champions():
    async def run():
        traffic = ChallengerTraffic(CollectorRegistry())
        await traffic.set_route(_route("split", 1))
        await traffic.close()  # `route none` arrived meanwhile
        return await traffic.answer(b"[]", HEADERS, "late")

    assert asyncio.run(run()) is None


def test_a_challengers_client_error_is_relayed_as_it_is():
    """A 4xx is the challenger's answer to the client's mistake (e.g. a 422 naming a field): the client gets it."""

    async def run(port):
        traffic = ChallengerTraffic(CollectorRegistry())
        await traffic.set_route(_route("split", port))
        relayed = await traffic.answer(b"[]", HEADERS, "req-1")
        await traffic.close()
        return relayed

    server = Challenger()
    server.status = 422
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        relayed = asyncio.run(run(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
    assert relayed is not None and relayed.status == 422


def test_shadow_copies_reach_the_shadow_and_are_dropped_when_it_falls_behind_or_is_gone():
    live_end, shadow_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    live_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)  # small: the shadow falls behind soon
    scored: list[tuple[str, str, bytes]] = []
    client = client_id(b"the client's key")

    async def run():
        traffic = ChallengerTraffic(CollectorRegistry())
        await traffic.set_route(_route("shadow", 0), live_end)
        receive_copies(shadow_end, lambda request_id, asked, body: scored.append((request_id, asked, body)))
        traffic.copy(b'[{"a":\n 1}]', "req-0", client)
        await asyncio.sleep(0.05)  # the shadow's loop scores what arrived
        assert scored == [("req-0", client, b'[{"a":\n 1}]')]  # who asked travels with the copy (its labels pair it)
        asyncio.get_running_loop().remove_reader(shadow_end)  # the shadow stops reading: it is behind
        started = time.monotonic()
        for n in range(1_000):
            traffic.copy(b"x" * 1_000, f"req-{n}", client)  # never waits, whatever the shadow does
        queued = time.monotonic() - started
        shadow_end.close()  # the shadow is gone
        traffic.copy(b"[]", "req-gone", client)
        await traffic.close()
        return traffic, queued

    traffic, queued = asyncio.run(run())
    assert queued < 0.5
    copied, dropped = _count(traffic, "shadow", "copied"), _count(traffic, "shadow", "dropped")
    assert copied + dropped == 1_002 and dropped >= 900  # 64 KiB hold about 60 copies of 1 kB
    assert len(scored) == 1


def test_the_share_is_sticky_per_key_and_close_to_the_share_asked():
    keys = [f"customer-{n}" for n in range(20_000)]
    inside = [key for key in keys if in_share(key, "2", 0.1)]
    assert abs(len(inside) / len(keys) - 0.1) < 0.01
    assert inside == [key for key in keys if in_share(key, "2", 0.1)]  # the same answer every time
    assert set(inside) <= {key for key in keys if in_share(key, "2", 0.3)}  # a larger share keeps its subjects
    assert {key for key in keys if in_share(key, "3", 0.1)} != set(inside)  # a new experiment draws anew


@pytest.mark.parametrize(
    "text, error",
    [
        ('{"mode": "mirror", "version": "2", "port": 1, "share": 0.5, "timeout": 1}', "unknown challenger mode"),
        ('{"mode": "split", "version": "2", "port": 1, "share": 0, "timeout": 1}', "share must be in (0, 1]"),
        ('{"mode": "split", "version": "2", "port": 1, "share": 1.5, "timeout": 1}', "share must be in (0, 1]"),
    ],
)
def test_a_route_that_makes_no_sense_is_refused_saying_why(text, error):
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        Route.parse(text)
    assert Route.parse("none") is None
