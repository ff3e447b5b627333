"""One color of a blue/green endpoint: the scoring app on the color's own private port, plus the endpoint's
public listening socket while the color is live. Runs inside the serving environment (stdlib + uvicorn).

The stable URL is one listening socket, not a proxy: whichever process accepts on it gets the traffic. The
socket passes between color processes over a Unix control socket as ancillary data (SCM_RIGHTS), the way
HAProxy's seamless reload passes its listeners. The kernel socket, with its queue of connections not yet
accepted, lives while any process holds it, so moving traffic loses no connection: the new color starts
accepting, then the old one stops accepting and drains its keep-alive clients with `Connection: close`.

Control commands, one line each; the answer is `ok` or `error <reason>`:
  adopt     (the socket attached) start accepting on it
  handover  answer with the socket attached
  release   stop accepting; drain connections (at most drain_seconds); keep serving the private port
  retire    release, then exit
  route <r> send a share of the clients' requests to a challenger (traffic.py; <r> is its route as JSON, a
            shadow's with the live end of its copies socket attached), or stop (`route none`)
  copies    (a socket attached) this color is a shadow: score the copies that arrive on it
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fin_behavior.serving.config import ServiceSettings

log = logging.getLogger("fin_behavior.serving.handoff")
_COMMAND_TIMEOUT = 60.0
_COMMAND_BYTES = 1 << 16  # the longest command: the supervisor's `start <spec>`


def _server(app: Any, protocol: type, **options: Any) -> Any:
    import uvicorn  # here, so the deploying side can import send_command without it

    config = uvicorn.Config(
        app, http=protocol, interface="asgi3", log_level="warning", access_log=False, proxy_headers=False, **options
    )
    return uvicorn.Server(config)


class ColorServer:
    def __init__(self, app: Any, settings: ServiceSettings):
        from fin_behavior.serving.protocol import bounded_protocol

        self.app = app
        self.control_fd = settings.control_fd
        self.drain_seconds = settings.drain_seconds
        self.draining = False
        self.protocol = bounded_protocol(settings.max_url_bytes, settings.max_head_bytes, settings.max_queued)
        self.private = _server(self._asgi, self.protocol, host=settings.host, port=settings.port)
        # the supervisor binds the private port and keeps it across restarts: no port is picked, then lost
        self.private_sockets = None if settings.private_fd is None else [socket.socket(fileno=settings.private_fd)]
        self.public: Any = None  # a uvicorn.Server on the public socket while live
        self.public_socket: socket.socket | None = None
        self._public_task: asyncio.Task | None = None

    async def _asgi(self, scope: dict, receive: Any, send: Any) -> None:
        """The app, plus `Connection: close` on every response while draining, so clients reconnect (to the
        color that now accepts) instead of finding their idle connection closed under them."""
        if not self.draining or scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_closing(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)

    def run(self) -> None:
        with asyncio.Runner(loop_factory=self.private.config.get_loop_factory()) as runner:  # uvloop if there
            runner.run(self.serve())

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.control_fd is not None:  # bound by the supervisor where this process cannot write or swap it
            listener = socket.socket(fileno=self.control_fd)
            threading.Thread(target=self._control_loop, args=(listener,), daemon=True).start()
        try:
            await self.private.serve(sockets=self.private_sockets)
        finally:
            await self._stop_public()

    # Commands, run on the event loop -------------------------------------------------------------------

    async def adopt(self, fd: int) -> None:
        if self.public is not None:
            os.close(fd)
            raise RuntimeError("already serving the public socket")
        sock = socket.socket(fileno=fd)
        # lifespan off: the app (and its model) is already started by the private server
        self.public, self.public_socket = _server(self._asgi, self.protocol, lifespan="off"), sock
        self._public_task = asyncio.create_task(self.public.serve(sockets=[sock]))
        while not self.public.started:
            if self._public_task.done():
                raise RuntimeError(f"could not serve the public socket: {self._public_task.exception()}")
            await asyncio.sleep(0.01)
        log.info("accepting on the public socket %s", sock.getsockname())

    async def release(self) -> None:
        public = self.public
        if public is None:
            return
        self.draining = True
        for listener in public.servers:
            listener.close()  # stop accepting; the socket itself lives on in the color that adopted it
        deadline = time.monotonic() + self.drain_seconds
        while public.server_state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        log.info(
            "released the public socket; %d connection(s) left at the end of the drain",
            len(public.server_state.connections),
        )
        await self._stop_public()

    async def retire(self) -> None:
        await self.release()
        self.private.should_exit = True

    async def _stop_public(self) -> None:
        if self.public is None or self._public_task is None:
            return
        self.public.should_exit = True
        with contextlib.suppress(Exception):
            await self._public_task
        self.public = self.public_socket = self._public_task = None

    # The control socket, served by a thread (blocking calls, ancillary data) ----------------------------

    def _control_loop(self, listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            with conn:
                answer_command(conn, self._answer)

    def _answer(self, command: str, fds: list[int]) -> int | None:
        def run(coroutine) -> None:
            asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(_COMMAND_TIMEOUT + self.drain_seconds)

        if command == "adopt" and len(fds) == 1:
            run(self.adopt(fds[0]))
        elif command == "handover":
            if self.public_socket is None:
                raise RuntimeError("this color does not hold the public socket")
            return self.public_socket.fileno()
        elif command in ("release", "retire"):
            run(getattr(self, command)())
        elif command.startswith("route ") and len(fds) <= 1:
            from fin_behavior.serving.traffic import Route

            try:
                route = Route.parse(command.removeprefix("route "))
            except ValueError:
                for fd in fds:
                    os.close(fd)
                raise
            copies = socket.socket(fileno=fds[0]) if fds else None
            run(self.app.traffic.set_route(route, copies))
        elif command == "copies" and len(fds) == 1:
            from fin_behavior.serving.traffic import receive_copies

            copies = socket.socket(fileno=fds[0])
            self.loop.call_soon_threadsafe(receive_copies, copies, self.app.score_copy)
        else:
            for fd in fds:
                os.close(fd)
            raise ValueError(f"unknown command {command!r}")
        return None


# The control protocol, one for the supervisor and the colors: one command line, at most one socket attached
# (SCM_RIGHTS); the answer `ok` (with at most one socket attached) or `error <reason>`. Over Unix sockets that only
# the platform's user may connect to (mode 0600, in directories no color can write).


def answer_command(conn: socket.socket, handle: Callable[[str, list[int]], int | None]) -> None:
    """The server side: read one command, run `handle(command, attached fds)`, answer with the socket it returns
    (if any). A failed command is an answer, never the server's end."""
    try:
        message, fds, _, _ = socket.recv_fds(conn, _COMMAND_BYTES, 1)
        handed = handle(message.decode().strip(), fds)
        if handed is None:
            conn.sendall(b"ok\n")
        else:
            socket.send_fds(conn, [b"ok\n"], [handed])
    except Exception as exc:
        log.exception("control command failed")
        with contextlib.suppress(OSError):
            conn.sendall(f"error {exc}\n".encode())


def send_command(control: Path, command: str, fd: int | None = None, timeout: float = 90.0) -> int | None:
    """The client side: send one command (with the socket `fd` attached, if given) to a color or the supervisor;
    returns the socket handed back (a color's `handover`), or RuntimeError with the reason it was refused."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(control))
        if fd is None:
            conn.sendall(command.encode() + b"\n")
        else:
            socket.send_fds(conn, [command.encode() + b"\n"], [fd])
        message, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    answer = message.decode().strip()
    if answer != "ok":
        for received in fds:
            os.close(received)
        raise RuntimeError(f"{command} refused by {control.name}: {answer.removeprefix('error ')}")
    return fds[0] if fds else None
