"""The prediction log: one JSON line per scored request, written off the request path, bounded on disk.

Two files per color, so that the monitor reads what it needs of every request without parsing inputs:

- `<color>.jsonl`, every request (its fields always in this order):
  `{"time":1795947359.649803,"model_version":"3","latency_ms":0.812,"outcome":200,"rows":1,
  "inputs_sha256":"…","client":"…","request_id":"…","unknown_categories":{"city":1}}` (`unknown_categories` only
  when there are any; `client` names the API key that asked, `client_id`, none for the probe key; `request_id` is
  the id the answer carried, serving/request_ids.py); a
  request of the platform's own (authenticated with its probe key, see serving/config.py) ends `,"probe":true}`
  instead, and it has no inputs line: the monitor counts probes apart from the clients' traffic;
- `<color>.inputs.jsonl`, a sampled share of the scored requests (`log_sample_rate`, default all):
  `{"time":…,"model_version":"3","request":{…},"response":{…},"client":"…","request_id":"…"}`, the body exactly as
  the client sent it (once it had passed validation) and the answer exactly as sent: bytes the service already
  holds, so logging them costs no serialization on the request path. The client and the request id come last, where
  only the service writes: `inputs_line_end` finds a request's line by its end alone.

The request path only appends lines to lists; a task on the event loop writes them every 0.5 s, one write call
per file, whole lines only, so a reader at most sees a last line still without its newline (readers skip it).
Past `log_max_bytes` a file is renamed `<name>.<time_ns>.jsonl` and a new one begun; only the newest
`log_keep_files` renamed files of each are kept. Each color writes its own files: one writer per file.

Given `-` as its path, the service writes both kinds of line to standard output instead, never rotated: in a
container the runtime keeps (and rotates) standard output, and a cluster's log shipper or the Kubernetes API
takes the lines from there (fin_behavior/monitoring/collect.py sorts them back into the two files).

The two lines are typed (`RequestLine`, `InputsLine`): `log_lines` is their one writer, `read_request_line` and
`read_inputs_line` their one reader where a line is read whole (the explanation worker, the drift sample, the
labelled rows); the monitor's scanners, which find fields in millions of lines without parsing them, spell every
key with `key`, as the writer does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any, TypedDict, cast

INPUTS_SUFFIX = ".inputs.jsonl"
STDOUT = Path("-")


# (typing.NotRequired is newer than the Python 3.10 of the Azure environment, which writes these lines too)
class _Figures(TypedDict):
    time: float  # seconds since the epoch, when the answer was sent
    model_version: str
    latency_ms: float
    outcome: int  # the HTTP status answered
    rows: int
    inputs_sha256: str  # of the body, its first 16 hex digits


class RequestLine(_Figures, total=False):
    """One line of `<color>.jsonl`: every request, its fields in this order."""

    client: str  # which API key asked (`client_id`): a decision is explained only to the key that made it
    request_id: str  # the id the answer carried (serving/request_ids.py)
    unknown_categories: dict[str, int]  # field -> records with a value never seen in training, when any
    probe: bool  # the platform's own request (always true when there): last on its line, no inputs line


class _Inputs(TypedDict):
    time: float
    model_version: str
    request: Any  # the body exactly as the client sent it (once it had passed validation)
    response: dict[str, Any]  # the answer exactly as sent (probabilities, predictions, request_id...)


class InputsLine(_Inputs, total=False):
    """One line of `<color>.inputs.jsonl`: a sampled request, its fields in this order."""

    client: str
    request_id: str  # last on its line, where only the service writes


def key(name: str) -> bytes:
    """How field `name` begins on a line: `"name":`."""
    return b'"%s":' % name.encode()


PROBE_END = b"," + key("probe") + b"true}\n"  # the end of a probe's request line: a client cannot write it


_REQUEST_ID = b"," + key("request_id") + b'"%s"'
_CLIENT = b"," + key("client") + b'"%s"'


CLIENT_DIGITS = 12
CLIENT_ID = rb"[0-9a-f]{%d}" % CLIENT_DIGITS  # what `client_id` gives, as the log's readers match it


def client_id(api_key: bytes) -> str:
    """The key's name in the log: the first 12 hex digits of its sha256 (the log never holds a key)."""
    return hashlib.sha256(api_key).hexdigest()[:CLIENT_DIGITS]


def request_id_mark(request_id: str, client: str = "") -> bytes:
    """How a line names its request (and the client that made it): `,"client":"..","request_id":".."`."""
    return (_CLIENT % client.encode() if client else b"") + _REQUEST_ID % request_id.encode()


def inputs_line_end(request_id: str, client: str = "") -> bytes:
    """How the inputs line of `request_id` made by `client` ends (ids and client names need no escaping)."""
    return request_id_mark(request_id, client) + b"}\n"


def read_request_line(line: bytes | str) -> RequestLine:
    """A request line read whole; ValueError when it is not one (not JSON, or without its figures)."""
    return cast(RequestLine, _read(line, _Figures.__required_keys__))


def read_inputs_line(line: bytes | str) -> InputsLine:
    """An inputs line read whole; ValueError when it is not one (not JSON, or without its request and answer)."""
    return cast(InputsLine, _read(line, _Inputs.__required_keys__))


def _read(line: bytes | str, required: frozenset[str]) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except RecursionError:  # a body nested deeper than the parser goes
        raise ValueError("a line nested too deeply to read") from None
    if not isinstance(entry, dict) or not required <= entry.keys():
        raise ValueError(f"not a prediction log line with {', '.join(sorted(required))}")
    return entry


# The writer's pieces, made once from the keys (the request path only formats them).
_HEAD = b"{" + key("time") + b"%.6f," + key("model_version") + b"%s"
_FIGURES = b"".join(
    b"," + key(name) + form
    for name, form in (("latency_ms", b"%.3f"), ("outcome", b"%d"), ("rows", b"%d"), ("inputs_sha256", b'"%s"'))
)
_UNKNOWN, _REQUEST, _RESPONSE = (b"," + key(name) for name in ("unknown_categories", "request", "response"))


def log_lines(
    version_json: bytes,
    latency_s: float,
    outcome: int,
    rows: int,
    body: bytes,
    unknown: dict[str, int],
    response: bytes,
    sample_rate: float,
    request_id: str = "",
    probe: bool = False,
    client: str = "",
) -> tuple[bytes, bytes | None]:
    """(request line, inputs line or None when not sampled) for one scored request, newline-terminated.
    Azure's score.py prints the same lines to stdout. `request_id` (request_ids.RULE) empty: a line without one;
    `client` (`client_id` of the key that asked) empty: a line that names none (Azure authenticates for us)."""
    head = _HEAD % (time.time(), version_json)
    line = head + _FIGURES % (latency_s * 1e3, outcome, rows, hashlib.sha256(body).hexdigest()[:16].encode())
    if request_id:
        line += request_id_mark(request_id, client)
    if probe:
        return line + PROBE_END, None
    if unknown:
        line += _UNKNOWN + json.dumps(unknown, separators=(",", ":")).encode()
    if outcome != 200 or not (sample_rate >= 1.0 or random.random() < sample_rate):
        return line + b"}\n", None
    # A newline between JSON tokens is only whitespace (inside a string it is not valid JSON at all).
    body = body.replace(b"\n", b" ").replace(b"\r", b" ")
    end = inputs_line_end(request_id, client) if request_id else b"}\n"
    return line + b"}\n", head + _REQUEST + body + _RESPONSE + response + end


class _Appender:
    """One log file: whole lines appended by a single write, rotated by size, old files removed."""

    def __init__(self, path: Path, max_bytes: int, keep_files: int):
        self.path, self.max_bytes, self.keep_files = path, max_bytes, keep_files
        self.pending: list[bytes] = []
        self._fd = 1 if path == STDOUT else self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def flush(self) -> None:
        if not self.pending:
            return
        data, self.pending = b"".join(self.pending), []
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if self.path != STDOUT and os.fstat(self._fd).st_size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        os.close(self._fd)
        os.replace(self.path, self.path.with_name(f"{self.path.name.removesuffix('.jsonl')}.{time.time_ns()}.jsonl"))
        self._fd = self._open()
        rotated = sorted(self.path.parent.glob(f"{self.path.name.removesuffix('.jsonl')}.[0-9]*.jsonl"))
        for old in rotated[: max(0, len(rotated) - self.keep_files)]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        self.flush()
        if self.path != STDOUT:
            os.close(self._fd)


class PredictionLog:
    def __init__(
        self,
        path: Path,
        model_version: str,
        sample_rate: float,
        max_bytes: int,
        keep_files: int,
        flush_seconds: float = 0.5,
    ):
        if path != STDOUT:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_seconds, self.sample_rate = flush_seconds, sample_rate
        self._version = json.dumps(model_version).encode()
        self._requests = _Appender(path, max_bytes, keep_files)
        inputs = STDOUT if path == STDOUT else path.with_name(f"{path.name.removesuffix('.jsonl')}{INPUTS_SUFFIX}")
        self._inputs = _Appender(inputs, max_bytes, keep_files)

    def write(
        self,
        latency_s: float,
        outcome: int,
        rows: int,
        body: bytes,
        unknown: dict[str, int],
        response: bytes,
        request_id: str = "",
        probe: bool = False,
        client: str = "",
    ) -> None:
        request, inputs = log_lines(
            self._version, latency_s, outcome, rows, body, unknown, response, self.sample_rate, request_id, probe,
            client,
        )  # fmt: skip
        self._requests.pending.append(request)
        if inputs:
            self._inputs.pending.append(inputs)

    def flush(self) -> None:
        self._requests.flush()
        self._inputs.flush()

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            self.flush()

    def close(self) -> None:
        self._requests.close()
        self._inputs.close()
