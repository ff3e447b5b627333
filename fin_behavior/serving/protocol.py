"""uvicorn's httptools protocol with the request head and the queue bounded, and its own errors in JSON.

uvicorn (0.54) puts no limit on the request line or the headers, and the parser's cost grows quadratically
with one long header: a single 64 MiB header stalled every connection of the event loop for seconds. Of the
ways to bound it, uvicorn's h11 protocol has a limit (`h11_max_incomplete_event_size`) but is several times
slower per request and answers a plain 400; a proxy in front would add the hop the endpoint is built without.
So the limit sits in front of the parser, in the protocol itself: bytes of a request head still arriving are
counted as they come (reading stops at the first chunk over the limit, so the parser never sees more than
one read past it), and a complete head is measured exactly before any application code runs. An over-long
request line is answered 414, over-long headers 431, malformed HTTP 400, each as JSON with `Connection: close`.

The queue: scoring runs on the event loop, one request at a time, so requests whose whole body has arrived
wait in a queue. Past `max_queued` of them a new request is answered 503 with Retry-After at once instead of
waiting without bound. Only complete requests count: a client still sending its body holds no place in the
queue (the service gives such a body a deadline of its own).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fin_behavior.serving.config import service_default

_REASONS = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


def _raw_response(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (
        status,
        _REASONS[status],
        len(body),
    )
    return head + body


def _reject_app(status: int, message: str, close: bool) -> Any:
    """A tiny ASGI app answering one request that must not reach the real one."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.append((b"connection", b"close") if close else (b"retry-after", b"1"))

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _too_long(what: str, size: int, limit: int) -> str:
    return f"{what} of {size:,} bytes is over the {limit:,}-byte limit; send less (the record goes in the body)"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_url_bytes: ClassVar[int] = service_default("max_url_bytes")
    max_head_bytes: ClassVar[int] = service_default("max_head_bytes")
    max_queued: ClassVar[int] = service_default("max_queued")  # complete requests waiting, on all connections
    # complete, unanswered requests on every connection of one service (bounded_protocol gives each its own)
    queued: ClassVar[list[int]] = [0]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # a request line or headers are (or will next be) arriving
        self._head_bytes = 0  # received since this head began: an upper bound while it is incomplete
        self._queued = 0  # this connection's complete, unanswered requests

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            # Still no end of the head: whatever has come is head. Answer, close, and read no more.
            url_only = not self.headers  # no header line finished yet: the request line itself is too long
            status, what = (414, "request line") if url_only else (431, "request headers")
            self.transport.write(_raw_response(status, _too_long(what, self._head_bytes, self.max_head_bytes)))
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if len(self.url) > self.max_url_bytes:
            self._answer_instead(414, _too_long("request line", len(self.url), self.max_url_bytes))
        elif head > self.max_head_bytes:
            self._answer_instead(431, _too_long("request head", head, self.max_head_bytes))
        elif self.queued[0] >= self.max_queued:
            message = f"{self.queued[0]} requests are waiting to be scored (at most {self.max_queued}); retry shortly"
            self._answer_instead(503, message, close=False)
        else:
            super().on_headers_complete()

    def _answer_instead(self, status: int, message: str, close: bool = True) -> None:
        app, self.app = self.app, _reject_app(status, message, close)
        try:
            super().on_headers_complete()  # runs the request through uvicorn's cycle, with the reject app
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._queued += 1
        self.queued[0] += 1

    def on_response_complete(self) -> None:
        self._dequeue(1)
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._dequeue(self._queued)  # requests it will never be answered
        super().connection_lost(exc)

    def _dequeue(self, count: int) -> None:
        count = min(count, self._queued)
        self._queued -= count
        self.queued[0] -= count

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_raw_response(400, f"malformed HTTP request: {msg}"))
        self.transport.close()


def bounded_protocol(max_url_bytes: int, max_head_bytes: int, max_queued: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for one service: its servers (private port, public socket) share one queue count."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"max_url_bytes": max_url_bytes, "max_head_bytes": max_head_bytes, "max_queued": max_queued, "queued": [0]},
    )
