"""The prediction log over a rolling window: every request's time, version, latency, outcome and unknown
categories, and a uniform sample of the logged inputs and probabilities for the drift statistics. The
platform's own requests (probes: rollout gates, endpoint checks, benchmarks) are only counted, apart: they are in
none of the traffic, latency, error or drift figures.

One pass over the request files (small lines, split once at their commas) and one over the inputs files in
which only a line's time and version are read; only the inputs kept in the sample (reservoir sampling, at most
`max_sampled` per version) are parsed, once the pass is done. Memory stays flat however many requests the
window holds. A last line still without its newline (being written) is left for the next read. The format is
fin_behavior/serving/prediction_log.py's.
"""

from __future__ import annotations

import json
import math
import random
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fin_behavior.serving.prediction_log import INPUTS_SUFFIX, PROBE_END, key, read_inputs_line
from fin_behavior.serving.raw_records import feature_record, is_raw
from fin_behavior.serving.validation import InputError, records_of

_UNKNOWN = key("unknown_categories")
_INPUTS = INPUTS_SUFFIX.removesuffix("jsonl")  # ".inputs.", in the current and the rotated file names
# Where each field's value begins in its comma-separated part of a line (the writer's keys, prediction_log.key).
_TIME = len(b"{" + key("time"))
_VERSION = len(key("model_version") + b'"')  # and ends one byte before its part does (the closing quote)
_LATENCY, _OUTCOME, _ROWS = (len(key(name)) for name in ("latency_ms", "outcome", "rows"))


@dataclass
class VersionTraffic:
    """What one model version saw in the window."""

    version: str
    latencies_ms: array = field(default_factory=lambda: array("d"))
    outcomes: Counter = field(default_factory=Counter)
    rows: int = 0
    unknown: Counter = field(default_factory=Counter)  # field -> records with a value never seen in training
    logged: int = 0  # requests that carried their inputs (the sampled share)
    probes: int = 0  # the platform's own requests (probe key): in none of the figures above
    _sample: list[bytes] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    def latency_percentiles(self) -> dict[str, float]:
        if not self.latencies_ms:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
        p50, p95, p99 = np.percentile(np.frombuffer(self.latencies_ms, dtype=float), [50, 95, 99])
        return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}

    def error_rate(self) -> float:
        errors = sum(n for status, n in self.outcomes.items() if status != 200)
        return errors / self.requests if self.requests else 0.0

    def sample(self, names: list[str]) -> tuple[dict[str, list], list[float]]:
        """The sampled requests' records as columns, and the probabilities the service answered for them."""
        columns: dict[str, list] = {name: [] for name in names}
        probabilities: list[float] = []
        for line in self._sample:
            try:
                entry = read_inputs_line(line)
                records = [feature_record(r) if is_raw(r) else r for r in records_of(entry["request"])]
                answered = entry["response"]["probabilities"]
            except (InputError, ValueError, KeyError, TypeError):
                continue  # not a line this reader understands: skipped, not fatal
            if len(answered) != len(records):
                continue
            for record, probability in zip(records, answered, strict=True):
                for name in names:
                    columns[name].append(record.get(name))
                probabilities.append(probability)
        return columns, probabilities


@dataclass
class Window:
    since: float
    until: float
    versions: dict[str, VersionTraffic]
    files: int
    lines: int  # the clients' requests

    @property
    def probes(self) -> int:
        """The platform's own requests in the window, every version: counted here and nowhere else."""
        return sum(t.probes for t in self.versions.values())

    def describe(self) -> str:
        return f"{self.lines} requests in {self.files} log file(s); {self.probes} platform probes counted apart"


class _Reservoir:
    """A uniform sample of at most `size` items of a stream, drawing a random number only for the items it keeps
    (Li's Algorithm L): after the first `size` items, the gap to the next kept one is drawn at once."""

    def __init__(self, size: int, seed: int):
        self.size, self.rng = size, random.Random(seed)
        self.next, self.seen = 1, 0  # the 1-based position of the next item to keep; items passed so far
        self.w = math.exp(math.log(self.rng.random()) / size)

    def keep(self, sample: list[bytes], item: bytes) -> None:
        if len(sample) < self.size:
            sample.append(item)
            self.next += 1
            if len(sample) == self.size:
                self.next += self._gap()
            return
        sample[self.rng.randrange(self.size)] = item
        self.w *= math.exp(math.log(self.rng.random()) / self.size)
        self.next += 1 + self._gap()

    def _gap(self) -> int:
        return int(math.log(self.rng.random()) / math.log(1 - self.w))


def log_files(directory: Path) -> list[Path]:
    """The request files of every color, current and rotated."""
    return [p for p in _all(directory) if _INPUTS not in p.name]


def input_files(directory: Path) -> list[Path]:
    """The sampled inputs files of every color, current and rotated."""
    return [p for p in _all(directory) if _INPUTS in p.name]


def _all(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []


def _fields(paths: list[Path], since: float, until: float, count: int) -> Iterator[list[bytes]]:
    """The first `count` comma-separated fields, and the rest, of every whole line in the window. The writer puts
    `{"time":<%.6f>,"model_version":"<v>",` first, then the figures, so a split reads them at C speed."""
    for path in paths:
        if path.stat().st_mtime < since:
            continue  # last written before the window began
        with path.open("rb") as log:
            for line in log:
                parts = line.split(b",", count)
                try:
                    at = float(parts[0][_TIME:])
                except (ValueError, IndexError):
                    continue  # not a line of this format
                if since <= at <= until and line.endswith(b"\n") and len(parts) > count:
                    yield parts


def read_window(directory: Path, since: float, until: float, max_sampled: int, seed: int = 0) -> Window:
    versions: dict[bytes, VersionTraffic] = {}

    def traffic_of(version: bytes) -> VersionTraffic:
        return versions.get(version) or versions.setdefault(version, VersionTraffic(version[_VERSION:-1].decode()))

    requests = log_files(directory)
    # {"time":T | "model_version":"v" | "latency_ms":L | "outcome":O | "rows":R | "inputs_sha256":"h"[,"unknown..."]}
    for _, version, latency, outcome, rows, rest in _fields(requests, since, until, 5):
        traffic = traffic_of(version)
        if rest.endswith(PROBE_END):  # the service writes the whole line: a client cannot end it so
            traffic.probes += 1
            continue
        try:
            traffic.latencies_ms.append(float(latency[_LATENCY:]))
            traffic.outcomes[int(outcome[_OUTCOME:])] += 1
            traffic.rows += int(rows[_ROWS:])
        except ValueError:
            continue
        if _UNKNOWN in rest:
            start = rest.index(_UNKNOWN) + len(_UNKNOWN)
            traffic.unknown.update(json.loads(rest[start : rest.index(b"}", start) + 1]))
    reservoirs: dict[bytes, _Reservoir] = {}
    # {"time":T | "model_version":"v" | "request":...,"response":...}
    for parts in _fields(input_files(directory), since, until, 2):
        traffic = traffic_of(parts[1])
        traffic.logged += 1
        reservoir = reservoirs.get(parts[1]) or reservoirs.setdefault(parts[1], _Reservoir(max_sampled, seed))
        if traffic.logged == reservoir.next:  # most lines are passed over with this one comparison
            reservoir.keep(traffic._sample, b",".join(parts))
    by_name = {t.version: t for t in versions.values()}
    return Window(since, until, by_name, len(requests), sum(t.requests for t in by_name.values()))
