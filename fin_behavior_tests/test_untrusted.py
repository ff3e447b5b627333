"""Answers from a served model's color are read as a hostile service's: bounded in size and in wall time, and a
slow readiness answer (a busy machine) is asked again until the wait's own deadline, not taken as a failure."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from fin_behavior.deploy.supervisor import wait_ready
from fin_behavior.untrusted import SlowAnswerError, UntrustedDataError, ask

READY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


@contextlib.contextmanager
def serving(answer: Callable[[socket.socket, int], None]) -> Iterator[int]:
    """A raw TCP server on a free port; `answer(connection, n)` writes whatever it likes to the n-th request."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def loop() -> None:
        n = 0
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):  # OSError: the reader hung up at its deadline
                conn.recv(65_536)
                answer(conn, n)
            n += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join()
        server.close()


def test_an_answer_past_its_size_bound_is_refused():
    def huge(conn: socket.socket, _: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000)

    with serving(huge) as port, pytest.raises(UntrustedDataError, match="passed 65,536 bytes"):
        ask("127.0.0.1", port, "GET", "/ready", limit=65_536, seconds=5)


def test_an_answer_dripped_a_byte_at_a_time_ends_at_the_deadline():
    def drip(conn: socket.socket, _: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            conn.sendall(b"x")
            time.sleep(0.05)

    started = time.monotonic()
    with serving(drip) as port, pytest.raises(SlowAnswerError, match="took longer than 1 s"):
        ask("127.0.0.1", port, "GET", "/ready", seconds=1)
    assert time.monotonic() - started < 3


def test_a_readiness_answer_slow_once_is_asked_again_and_a_stalling_one_fails_at_the_deadline():
    def slow_first(conn: socket.socket, n: int) -> None:
        if n == 0:
            time.sleep(5.5)  # longer than one ask's 5 s bound: a busy machine
        conn.sendall(READY)

    with serving(slow_first) as port:
        assert wait_ready(port, timeout=15, alive=lambda: True) is None

    def stall(conn: socket.socket, _: int) -> None:
        time.sleep(3)

    with serving(stall) as port:
        why = wait_ready(port, timeout=2, alive=lambda: True, setting="setting deploy_start_timeout_seconds")
    assert why is not None and why.startswith("not ready within 2 s (setting deploy_start_timeout_seconds)")
    # the last ask's bound: the whole 2 s, or what was left of them when a loaded machine made the first end early
    assert re.search(r"took longer than (2|[01](\.[0-9]+)?) s", why), why
