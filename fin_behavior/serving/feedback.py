"""POST /feedback: the true outcomes of scored requests, by request id, appended to a bounded feedback log.

    {"labels": [{"request_id": "…", "row": 0, "label": 1, "observed_at": "2026-12-07T08:00:00Z"}]}

`row` (default 0) is the row of a multi-row request, `label` 0 or 1, `observed_at` (optional: when the outcome
was known; ISO 8601 or Unix seconds; default now). A body with any malformed entry is refused whole (422, the
entries named), so a client never has to guess which half was kept. Whether an id was ever scored is not known
here (another color or an earlier version may have scored it): the join counts unknown and duplicate labels
(fin_behavior/monitoring/outcomes.py).

A label is the posting key's: it joins only a decision that same key made (the prediction log names the key that
asked, `client_id`), so one client cannot label, or mislabel, another's decisions; a label for another client's
decision is counted like one for an id never scored (fin_behavior/monitoring/labels.py). The answer is the same
either way: a client learns nothing about ids that are not its own. Labels posted with the platform's probe key
join any decision with their id.

One line per label in `<prediction log dir>/feedback/<color>.jsonl`, written before the answer (202 means it is
on disk), rotated and bounded like the prediction log: `{"time":…,"client":"…","request_id":"…","row":0,
"label":1,"observed_at":…}` (no `client` for the probe key). In its own folder, so the monitor's prediction-log
reader never mistakes it for requests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse, Response

from fin_behavior.serving.prediction_log import STDOUT, _Appender
from fin_behavior.serving.request_ids import RULE, is_valid
from fin_behavior.serving.validation import InputError, decode

FEEDBACK_DIR = "feedback"
MAX_AT_ONCE = 2  # label posts parsed and written at once; more are a 429
MAX_LABELS = 10_000  # per request; a bigger batch goes in several requests or as a file (fin-behavior feedback)
_SHOWN = 5  # bad entries named in a refusal


_EARLIEST, _LATEST = 946_684_800.0, 4_102_444_800.0  # 2000-01-01 and 2100-01-01, UTC


class FeedbackError(ValueError):
    """A label that cannot be taken; the message says which entry and why."""


def parse_time(value: Any) -> float:
    """Unix seconds from a number or an ISO 8601 string (a naive one is UTC)."""
    if isinstance(value, bool):
        raise FeedbackError("observed_at must be ISO 8601 or Unix seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise FeedbackError(f"observed_at {value[:40]!r} is not ISO 8601 (e.g. 2026-12-07T08:00:00Z)") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp()
    else:
        raise FeedbackError("observed_at must be ISO 8601 or Unix seconds")
    if not _EARLIEST <= seconds <= _LATEST:  # NaN fails both: the log stays standard JSON
        raise FeedbackError("observed_at must be a time between 2000 and 2100 (ISO 8601 or Unix seconds)")
    return seconds


def validate_label(entry: Any, now: float) -> dict[str, Any]:
    """One label as the log stores it, or FeedbackError naming the field."""
    if not isinstance(entry, dict):
        raise FeedbackError("each label is an object with request_id, row, label, observed_at")
    unknown = set(entry) - {"request_id", "row", "label", "observed_at"}
    if unknown:
        raise FeedbackError(f"unknown field(s) {sorted(unknown)}; use request_id, row, label, observed_at")
    request_id = entry.get("request_id")
    if not isinstance(request_id, str) or not is_valid(request_id):
        raise FeedbackError(f"request_id must be the id a /score answer carried ({RULE})")
    row = entry.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        raise FeedbackError("row must be an integer >= 0 (the row of a multi-row request; default 0)")
    label = entry.get("label")
    if isinstance(label, bool) or label not in (0, 1):
        raise FeedbackError(f"label must be 0 or 1, not {json.dumps(label)[:20]}")
    observed = parse_time(entry["observed_at"]) if entry.get("observed_at") is not None else now
    return {"request_id": request_id, "row": row, "label": int(label), "observed_at": observed}


def parse_body(raw: bytes, now: float) -> list[dict[str, Any]]:
    try:
        body = decode(raw)  # UTF-8 only, bounded nesting: the scoring routes' reader
    except InputError as exc:
        raise FeedbackError(f'{exc.message}: send {{"labels": [{{"request_id": …, "label": 0 or 1}}]}}') from None
    labels = body.get("labels") if isinstance(body, dict) else None
    if not isinstance(labels, list) or not labels:
        raise FeedbackError('send {"labels": [{"request_id": …, "row": 0, "label": 0 or 1}, …]}, at least one')
    if len(labels) > MAX_LABELS:
        raise FeedbackError(
            f"{len(labels)} labels in one request; at most {MAX_LABELS} (or a file: fin-behavior feedback)"
        )
    valid, problems = [], []
    for index, entry in enumerate(labels):
        try:
            valid.append(validate_label(entry, now))
        except FeedbackError as exc:
            problems.append(f"labels[{index}]: {exc}")
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise FeedbackError(
            f"{len(problems)} of {len(labels)} labels refused, none kept: " + "; ".join(problems[:_SHOWN]) + more
        )
    return valid


def feedback_path(prediction_log: Path) -> Path:
    """A color's feedback log, beside (not among) its prediction log files."""
    return prediction_log.parent / FEEDBACK_DIR / prediction_log.name


class FeedbackLog:
    def __init__(self, prediction_log: Path | None, max_bytes: int, keep_files: int):
        self.appender: _Appender | None = None
        self.busy, self.lock = 0, threading.Lock()
        if prediction_log is not None:
            path = STDOUT if prediction_log == STDOUT else feedback_path(prediction_log)
            if path != STDOUT:
                path.parent.mkdir(parents=True, exist_ok=True)
            self.appender = _Appender(path, max_bytes, keep_files)

    def append(self, labels: list[dict[str, Any]], now: float, client: str = "") -> None:
        """Labels posted by `client` (`client_id` of the posting key; "" for the probe key: unscoped), one line
        each, the client before the request id so the monitor reads a chunk of them with one expression."""
        assert self.appender is not None
        head = b'{"time":%.6f,' % now + (b'"client":"%s",' % client.encode() if client else b"")
        self.appender.pending.extend(
            head + json.dumps(label, separators=(",", ":")).encode()[1:] + b"\n" for label in labels
        )
        self.appender.flush()

    async def receive(self, raw: bytes, client: str) -> Response:
        """`raw`: the body, read by the service within its size and time bounds; `client`: who posted it
        (`FeedbackLog.append`). Parsing, checking and writing run off the event loop (10,000 labels take tens of
        milliseconds), at most `MAX_AT_ONCE` at a time: a client posting labels in a loop cannot slow scoring
        down, it is told to wait (429)."""
        if self.appender is None:
            return JSONResponse(
                {
                    "error": "this service keeps no log: drop a label file in the ground-truth folder "
                    "(fin-behavior feedback FILE)"
                },
                status_code=503,
            )
        if self.busy >= MAX_AT_ONCE:
            return JSONResponse(
                {
                    "error": f"{self.busy} label posts are being written; retry shortly, or drop a file instead "
                    "(fin-behavior feedback FILE)"
                },
                status_code=429,
                headers={"Retry-After": "1"},
            )
        self.busy += 1
        try:
            accepted = await asyncio.to_thread(self._take, raw, time.time(), client)
        except FeedbackError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        finally:
            self.busy -= 1
        return JSONResponse({"accepted": accepted}, status_code=202)

    def _take(self, raw: bytes, now: float, client: str) -> int:
        labels = parse_body(raw, now)
        with self.lock:
            self.append(labels, now, client)
        return len(labels)
