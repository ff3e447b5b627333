"""Decisions joined to their outcomes: every logged decision (the prediction log's inputs lines: time, version,
request id, probabilities) in a window of prediction time, with its label where one came back.

One pass over the inputs files; a line is split at its commas and its answer searched for the request id and
the probabilities, so no JSON is parsed on the way (the answer is the service's own bytes). A label is taken by
the first decision that claims it; labels no logged decision claimed are `unknown` (an id never scored, or one
whose line was not sampled or was rotated away). Only the sampled share of requests is logged with its answer
(PREDICTION_LOG_SAMPLE_RATE, default all): the figures are over that uniform sample.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fin_behavior.monitoring.labels import Labels, decision_key
from fin_behavior.monitoring.window import input_files

if TYPE_CHECKING:
    import pandas as pd

_RESPONSE = b',"response":'
_PROBABILITIES = b'"probabilities":'
_REQUEST_ID = b'"request_id":'


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
    without_id: int  # logged decisions with no request id (logged before ids existed): never labelled
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


def join(log_dir: Path, labels: Labels, since: float, until: float, keep_requests: bool = False) -> Joined:
    """Decisions made in [since, until] with their labels, per version. Labels are taken out of `labels.table`
    as decisions claim them (whatever their time), so what is left there is unknown. With `keep_requests`, the
    lines of labelled decisions are kept (their request bodies are the labelled production rows)."""
    table = labels.table
    versions: dict[bytes, Decisions] = {}
    without_id = 0
    kept: list[tuple[bytes, list[int]]] = []
    for path in input_files(log_dir):
        with path.open("rb") as log:
            for line in log:
                first = line.find(b",")
                second = line.find(b",", first + 1)
                try:
                    at = float(line[8:first])
                except ValueError:
                    continue  # not a line of this format
                if second < 0 or not line.endswith(b"\n"):
                    continue  # still being written
                answer = answer_of(line)
                if answer is None:
                    without_id += 1
                    continue
                request_id, probabilities = answer
                found = [table.pop(decision_key(request_id, row), None) for row in range(len(probabilities))]
                if keep_requests and any(found):
                    kept.append((line, [f[0] if f else -1 for f in found]))
                if not since <= at <= until:
                    continue
                version = line[first + 1 : second]
                decisions = versions.get(version) or versions.setdefault(version, Decisions(version[17:-1].decode()))
                for probability, label in zip(probabilities, found, strict=True):
                    decisions.times.append(at)
                    decisions.probabilities.append(probability)
                    decisions.labels.append(label[0] if label else -1)
    by_name = {d.version: d for d in versions.values()}
    return Joined(since, until, by_name, len(table), without_id, kept)


def labelled_rows(joined: Joined) -> pd.DataFrame:
    """The labelled production decisions as training rows (KEY = request id/row, the features as the client sent
    them, TARGET = the label): the rows a retrain adds to the raw file's. A request whose body cannot be read
    back as the model's features is left out."""
    import json

    import pandas as pd

    from fin_behavior.data.columns import CATEGORICAL_FEATURES, FEATURES, KEY, NUMERIC_FEATURES, TARGET
    from fin_behavior.serving.validation import InputError, records_of

    rows = []
    for line, labels in joined.labelled_requests:
        try:
            entry = json.loads(line)
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
