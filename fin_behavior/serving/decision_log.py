"""One decision found again in the prediction log by its request id (prediction_log.py writes the lines): the
records the client sent and the probabilities it was answered, or why they cannot be had, saying which: an id this
endpoint never answered (or whose lines were rotated away), a request whose inputs were not sampled, one that was
refused rather than scored, one answered by another model version. Run in the explanation worker (explain.py):
the scoring process never scans files.

Every color of the endpoint writes its files into the same directory, so a decision answered by the other color
(before or after a blue/green switch) is found too. The newest file is searched first and the last line with the
id wins: a client that reuses its own id is answered for its latest decision."""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fin_behavior.serving.prediction_log import (
    STDOUT,
    RequestLine,
    inputs_line_end,
    read_inputs_line,
    read_request_line,
    request_id_mark,
)


class NotFound(LookupError):
    """No logged decision to explain; the message says which case it is (answered as a 404)."""


@dataclass(frozen=True)
class Decision:
    request_id: str
    model_version: str
    request: Any  # the body as the client sent it (any form validation.records_of takes)
    predictions: list  # as answered
    probabilities: list[float] | None  # as answered; None from a submitted model, which answers predictions only


def _files(log: Path, inputs: bool) -> list[Path]:
    """The request (or inputs) files of every color, current and rotated, newest first."""
    found = [p for p in log.parent.glob("*.jsonl") if (".inputs." in p.name) == inputs]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _last_line_with(path: Path, needle: bytes, at_end: bool) -> bytes | None:
    """The last whole line of `path` that contains `needle` (ends with it, when `at_end`)."""
    try:
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            end = len(data)
            while (found := data.rfind(needle, 0, end)) >= 0:
                start = data.rfind(b"\n", 0, found) + 1
                stop = data.find(b"\n", found)
                if stop >= 0 and (not at_end or stop == found + len(needle) - 1):
                    return bytes(data[start : stop + 1])
                end = found
    except (OSError, ValueError):  # gone (rotated away) or empty: nothing in it
        return None
    return None


def find_decision(log: Path | None, request_id: str, served_version: str, client: str = "") -> Decision:
    """The logged decision `request_id` of this model version made by `client` (the `client_id` of the key that
    asked; "" finds any: the platform's probe key); NotFound saying why not. Another client's decision reads as
    one never answered: ids are the clients' own and guessable, the inputs behind them are not to be shown."""
    if log is None:
        raise NotFound("this service keeps no prediction log, so no decision can be found by its id; "
                       "POST /explain with the records instead")  # fmt: skip
    if log == STDOUT:
        raise NotFound("this service writes its prediction log to standard output, where it cannot read it back; "
                       "POST /explain with the records instead")  # fmt: skip
    end = inputs_line_end(request_id, client)
    for path in _files(log, inputs=True):
        line = _last_line_with(path, end, at_end=True)
        if line is not None:
            try:
                entry = read_inputs_line(line)
                version, answer = str(entry["model_version"]), entry["response"]
                predictions, probabilities = list(answer["predictions"]), answer.get("probabilities")
                probabilities = None if probabilities is None else list(probabilities)
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                raise NotFound(f"request {request_id!r} is in the log but its line cannot be read back") from None
            if version != served_version:
                raise NotFound(_other_version(request_id, version, served_version))
            return Decision(request_id, version, entry["request"], predictions, probabilities)
    needle = request_id_mark(request_id, client)
    for path in _files(log, inputs=False):
        line = _last_line_with(path, needle, at_end=False)
        if line is not None:
            return _why_not_logged(request_id, read_request_line(line), served_version)
    raise NotFound(
        f"no request {request_id!r} in this endpoint's prediction log: it was never answered here, or its lines "
        "were rotated away (the log keeps log_keep_files files of log_max_bytes each)"
    )


def _other_version(request_id: str, version: str, served: str) -> str:
    return (
        f"request {request_id!r} was answered by model version {version}, not the version {served} this service "
        f"serves: only version {version} can explain it (deploy it, or POST /explain the records to this one)"
    )


def _why_not_logged(request_id: str, line: RequestLine, served: str) -> Decision:
    version = str(line["model_version"])
    if line.get("probe"):
        raise NotFound(f"request {request_id!r} was the platform's own probe: its inputs are never logged")
    if line["outcome"] != 200:
        raise NotFound(
            f"request {request_id!r} was answered {line['outcome']}, not scored: there is no decision to explain"
        )
    if version != served:
        raise NotFound(_other_version(request_id, version, served))
    raise NotFound(
        f"request {request_id!r} was scored, but its inputs were not sampled into the log (log_sample_rate below "
        "1): it cannot be explained from the log; POST /explain with the same records gives the same explanation"
    )
