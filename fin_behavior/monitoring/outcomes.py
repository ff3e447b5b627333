"""Decisions joined to their outcomes: every logged decision (the prediction log's inputs lines: time, version,
probabilities, the client whose key asked, request id) in a window of prediction time, with its label where one
came back.

One pass over the inputs files, one regular expression per span, so no JSON is parsed on the way (the answer and
the line's end are the service's own bytes). A label is taken by the first decision that may claim it: one its
client's key posted, or an unscoped one (labels.py says whose label joins which decision); labels no logged
decision claimed are `unknown` (an id never scored, another client's decision, or one whose line was not sampled or
was rotated away). Only the sampled share of requests is logged with its answer (PREDICTION_LOG_SAMPLE_RATE,
default all): the figures are over that uniform sample.
"""

from __future__ import annotations

import gc
import mmap
import re
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fin_behavior.monitoring.labels import KEYS, Labels, decision_key, either
from fin_behavior.monitoring.window import input_files
from fin_behavior.serving.prediction_log import key, read_inputs_line

if TYPE_CHECKING:
    import pandas as pd

_RESPONSE = b"," + key("response")
_PROBABILITIES = key("probabilities")  # a key of the answer the line carries
_REQUEST_ID = key("request_id")


@dataclass
class Decisions:
    """One version's decisions in the window: when, the probability it answered, the label (-1: none yet)."""

    version: str
    times: array = field(default_factory=lambda: array("d"))
    probabilities: array = field(default_factory=lambda: array("d"))
    labels: array = field(default_factory=lambda: array("b"))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.frombuffer(self.times, dtype=float),
            np.frombuffer(self.probabilities, dtype=float),
            np.frombuffer(self.labels, dtype=np.int8),
        )


@dataclass
class Joined:
    since: float
    until: float
    versions: dict[str, Decisions]
    unknown: int  # labels no logged decision claimed
    matched: int  # labels a decision took (an unscoped one beside a decision's own is a duplicate, neither)
    labelled_requests: list[tuple[bytes, list[int]]] = field(default_factory=list)  # (request line, labels by row)


def answer_of(line: bytes) -> tuple[bytes, list[float]] | None:
    """(request id, probabilities) from an inputs line's answer; None without either. The service writes its
    answer compact; a space after a colon (another writer) is allowed."""
    at = line.rfind(_RESPONSE)
    if at < 0:
        return None
    start = line.find(_PROBABILITIES, at)
    rid = line.find(_REQUEST_ID, at)
    if start < 0 or rid < 0:
        return None
    start = line.index(b"[", start) + 1
    rid = line.index(b'"', rid + len(_REQUEST_ID)) + 1
    try:
        probabilities = [float(p) for p in line[start : line.index(b"]", start)].split(b",")]
    except ValueError:
        return None
    return line[rid : line.index(b'"', rid)], probabilities


_CHUNK = 32 << 20  # bytes read at a time: memory stays flat whatever the window holds
# One decision line: time, version, the answer's probabilities, and what the service writes after the answer, at
# the line's end where a request body cannot reach: the client (none on an older line) and the request id, as the
# two groups of labels.KEYS. The end is matched exactly, after the answer's closing brace: behind a bare `[^\n]*`
# an optional client would always be skipped (the longest prefix wins). A line it does not match has no id to join
# on.
DECISION = re.compile(
    rb"\{"
    + key("time")
    + rb"([0-9.]+),"
    + key("model_version")
    + rb'"([^"\n]*)",[^\n]*'
    + _PROBABILITIES
    + rb"\s*\[([^\]\n]*)\][^\n]*\},"
    + KEYS
    + rb"\}\n"
)
_KEEP = re.compile(b"(" + DECISION.pattern + b")")  # the same, and the whole line (for the training rows)


def chunks(path: Path) -> Iterator[bytes]:
    """A file in pieces of whole lines (a last line still without its newline is left for the next read)."""
    with path.open("rb") as log:
        rest = b""
        while block := log.read(_CHUNK):
            block = rest + block
            end = block.rfind(b"\n") + 1
            rest = block[end:]
            if end:
                yield block[:end]


def spans(path: Path) -> Iterator[tuple[mmap.mmap, int, int]]:
    """A file mapped, in spans of whole lines (start, end): read in place, never copied."""
    if path.stat().st_size == 0:
        return
    with path.open("rb") as log, mmap.mmap(log.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        start = 0
        while start < len(mapped):
            end = mapped.rfind(b"\n", start, start + _CHUNK) + 1
            if end <= start:  # a line longer than a span, or a last line still being written
                end = mapped.find(b"\n", start) + 1
                if end <= 0:
                    return
            yield mapped, start, end
            start = end


@contextmanager
def bulk() -> Iterator[None]:
    """Python's cyclic garbage collector off while millions of small tuples are made (none of them in a cycle):
    left on, it walks the young objects again every 700 allocations, a third of the join's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def join(log_dir: Path, labels: Labels, since: float, until: float, keep_requests: bool = False) -> Joined:
    """Decisions made in [since, until] with their labels, per version. Labels are taken out of `labels`
    as decisions claim them (whatever their time), so what is left there is unknown. With `keep_requests`, the
    lines of labelled decisions are kept (their request bodies are the labelled production rows).

    A regular expression finds every decision of a span of the mapped file at C speed; what is left per decision
    in Python are the dictionary look-ups of its label (Labels.take)."""
    with bulk():
        return _join(log_dir, labels, since, until, keep_requests)


def _join(log_dir: Path, labels: Labels, since: float, until: float, keep_requests: bool) -> Joined:
    held, duplicates = len(labels), labels.duplicates
    versions: dict[str, Decisions] = {}
    kept: list[tuple[bytes, list[int]]] = []
    pattern = _KEEP if keep_requests else DECISION
    for path in input_files(log_dir):
        for mapped, start, end in spans(path):
            found = pattern.findall(mapped, start, end)
            if not found:
                continue
            columns = list(zip(*found, strict=True))
            times, version_of, answered, owned, plain = columns[-5:]
            ids = either(owned, plain)
            if b"," in b"|".join(answered):  # multi-row requests: one decision per row
                rows = [p.split(b",") for p in answered]
                keys = [decision_key(rid, row) for rid, ps in zip(ids, rows, strict=True) for row in range(len(ps))]
                owner = np.repeat(np.arange(len(rows)), [len(ps) for ps in rows])
                probabilities = np.array([x for ps in rows for x in ps]).astype(float)
            else:
                keys, owner, probabilities = list(ids), np.arange(len(ids)), np.array(answered).astype(float)
            label = labels.take(keys, nameless=b"" in owned)
            if keep_requests:
                by_request: dict[int, list[int]] = {}
                for i, y in zip(owner.tolist(), label.tolist(), strict=True):
                    by_request.setdefault(i, []).append(y)
                kept += [(columns[0][i], ys) for i, ys in by_request.items() if max(ys) >= 0]
            at = np.array(times).astype(float)[owner]
            inside = (at >= since) & (at <= until)
            if not inside.any():
                continue
            version = np.array(version_of)[owner]
            for name in np.unique(version[inside]):
                mask = inside & (version == name)
                decisions = versions.setdefault(name.decode(), Decisions(name.decode()))
                decisions.times.frombytes(at[mask].tobytes())
                decisions.probabilities.frombytes(probabilities[mask].tobytes())
                decisions.labels.frombytes(label[mask].tobytes())
    matched = held - len(labels) - (labels.duplicates - duplicates)
    return Joined(since, until, versions, len(labels), matched, kept)


def labelled_rows(joined: Joined) -> pd.DataFrame:
    """The labelled production decisions as training rows (KEY = request id/row, the features as the client sent
    them, TARGET = the label): the rows a retrain adds to the raw file's. A request whose body cannot be read
    back as the model's features is left out."""
    import pandas as pd

    from fin_behavior.data.columns import CATEGORICAL_FEATURES, FEATURES, KEY, NUMERIC_FEATURES, TARGET
    from fin_behavior.serving.validation import InputError, records_of

    rows = []
    for line, labels in joined.labelled_requests:
        try:
            entry = read_inputs_line(line)
            records = records_of(entry["request"])
            request_id = answer_of(line)[0].decode()  # type: ignore[index]  # kept only with an answer
        except (InputError, ValueError, KeyError, TypeError):
            continue
        for row, (record, label) in enumerate(zip(records, labels, strict=False)):
            if label >= 0 and isinstance(record, dict) and all(name in record for name in FEATURES):
                rows.append({KEY: f"{request_id}/{row}", **{n: record[n] for n in FEATURES}, TARGET: label})
    frame = pd.DataFrame(rows, columns=[KEY, *FEATURES, TARGET])
    frame[list(NUMERIC_FEATURES)] = frame[list(NUMERIC_FEATURES)].astype(float)
    frame[list(CATEGORICAL_FEATURES)] = frame[list(CATEGORICAL_FEATURES)].astype(str)
    frame[TARGET] = frame[TARGET].astype("int64")
    return frame
