"""Ground truth in: the labels the scoring service took (POST /feedback, its feedback log) and the label files
dropped in the ground-truth folder (CSV or Parquet with request_id, row, label, observed_at), as one table keyed
by decision: request id and row. A bad label (malformed, not 0/1) or a second label for the same decision is
counted, never fatal: the first label of a decision wins, the log before the folder.

The feedback log is read at C speed where it can be: the service writes its fields in one order
(`{"time":T,"request_id":"R","row":N,"label":L,"observed_at":O}`), so one regular expression reads a chunk of
such lines; a chunk with any other line is read line by line, each parsed as JSON and validated like a posted
label."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fin_behavior.serving.feedback import FEEDBACK_DIR, FeedbackError, validate_label
from fin_behavior.serving.request_ids import is_valid

if TYPE_CHECKING:
    import pandas as pd

    from fin_behavior.settings import Settings

COLUMNS = ("request_id", "row", "label", "observed_at")
FILE_SUFFIXES = (".csv", ".parquet")


def decision_key(request_id: bytes, row: int) -> bytes:
    """The join key of one decision: the request id for row 0 (nearly every request), `id#row` for the others."""
    return request_id if row == 0 else b"%s#%d" % (request_id, row)


@dataclass
class Labels:
    """Decision key -> label, and what was not taken. (When an outcome was observed is checked and kept in the
    logs and files; the window is one of prediction time.)"""

    table: dict[bytes, int] = field(default_factory=dict)
    invalid: int = 0  # malformed, or a label not 0/1
    duplicates: int = 0  # a second label for a decision already labelled (the first is kept)
    files: int = 0

    def add(self, key: bytes, label: int) -> None:
        if key in self.table:
            self.duplicates += 1
        else:
            self.table[key] = label

    def counts(self) -> dict[str, int]:
        return {"labels": len(self.table), "invalid": self.invalid, "duplicates": self.duplicates, "files": self.files}


def ground_truth_home(settings: Settings) -> Path:
    """The folder label files are dropped in (setting ground_truth_dir)."""
    return settings.ground_truth_dir or settings.var_dir / "ground_truth"


def feedback_dir(log_dir: Path) -> Path:
    return log_dir / FEEDBACK_DIR


def read_labels(log_dir: Path, ground_truth: Path | None) -> Labels:
    """Every label of the feedback logs under `log_dir` (current and rotated), then of the folder's files."""
    from fin_behavior.monitoring.outcomes import bulk

    with bulk():
        return _read_all(log_dir, ground_truth)


def _read_all(log_dir: Path, ground_truth: Path | None) -> Labels:
    labels = Labels()
    logs = sorted(feedback_dir(log_dir).glob("*.jsonl")) if feedback_dir(log_dir).is_dir() else []
    for path in logs:
        labels.files += 1
        _read_log(path, labels)
    for path in label_files(ground_truth):
        labels.files += 1
        _read_file(path, labels)
    return labels


def label_files(ground_truth: Path | None) -> list[Path]:
    if ground_truth is None or not ground_truth.is_dir():
        return []
    return sorted(p for p in ground_truth.iterdir() if p.suffix in FILE_SUFFIXES and not p.name.startswith("."))


# A label line as the service writes it; a chunk of only such lines is read with one regular expression.
_LABEL = re.compile(rb'"request_id":"([A-Za-z0-9._-]{1,64})","row":([0-9]+),"label":([01]),"observed_at":[0-9.]+\}\n')


def _read_log(path: Path, labels: Labels) -> None:
    from fin_behavior.monitoring.outcomes import chunks

    for chunk in chunks(path):
        found = _LABEL.findall(chunk)
        if len(found) != chunk.count(b"\n") or len(found) != chunk.count(b'{"time":'):  # not all the service's
            for line in chunk.splitlines(keepends=True):
                _read_line(line, labels)
            continue
        ids, rows, ys = zip(*found, strict=True)
        if rows.count(b"0") == len(rows):
            keys: Sequence[bytes] = ids
        else:
            keys = [rid if row == b"0" else b"%s#%s" % (rid, row) for rid, row in zip(ids, rows, strict=True)]
        fresh = dict(zip(reversed(keys), map(int, reversed(ys)), strict=True))  # the first label of a key wins
        labels.duplicates += len(keys) - len(fresh)
        for key in fresh.keys() & labels.table.keys():
            del fresh[key]
            labels.duplicates += 1
        labels.table.update(fresh)


def _read_line(line: bytes, labels: Labels) -> None:
    try:
        entry = json.loads(line)
        entry = validate_label({k: v for k, v in entry.items() if k != "time"}, entry.get("time", 0.0))
    except (ValueError, FeedbackError, AttributeError):
        labels.invalid += 1
        return
    labels.add(decision_key(entry["request_id"].encode(), entry["row"]), entry["label"])


def read_label_file(path: Path) -> pd.DataFrame:
    """A label file as a table of the four columns, every row kept (validity is judged by `valid_rows`)."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"request_id": str})
    except (OSError, ValueError, ImportError) as exc:
        raise FeedbackError(f"{path.name} is not a readable {path.suffix[1:]} file: {str(exc)[:200]}") from None
    missing = {"request_id", "label"} - set(frame.columns)
    if missing:
        raise FeedbackError(
            f"{path.name} has no column(s) {sorted(missing)}; a label file has request_id, label and optionally row, "
            f"observed_at (found: {', '.join(map(str, frame.columns[:10]))})"
        )
    if "row" not in frame:
        frame["row"] = 0
    if "observed_at" not in frame:
        frame["observed_at"] = path.stat().st_mtime
    return frame[list(COLUMNS)]


def valid_rows(frame: pd.DataFrame) -> pd.Series:
    """Which rows of a label file are labels: an id as /score gives them, a row >= 0, a label 0 or 1."""
    import pandas as pd

    ids = frame["request_id"].notna() & frame["request_id"].astype(str).map(is_valid)
    row = pd.to_numeric(frame["row"], errors="coerce")
    label = pd.to_numeric(frame["label"], errors="coerce")
    return ids & (row >= 0) & (row % 1 == 0) & label.isin([0, 1]) & _times(frame["observed_at"]).notna()


def _times(column: pd.Series) -> pd.Series:
    import pandas as pd

    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().all():
        return numeric.astype(float)
    parsed = pd.to_datetime(column, errors="coerce", utc=True)
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().where(parsed.notna(), numeric)


def _read_file(path: Path, labels: Labels) -> None:
    try:
        frame = read_label_file(path)
    except FeedbackError:
        labels.invalid += 1  # a whole file unreadable counts once; `fin-behavior feedback` refuses it up front
        return
    ok = valid_rows(frame)
    labels.invalid += int((~ok).sum())
    good = frame[ok]
    for request_id, row, label in zip(
        good["request_id"].astype(str), good["row"].astype(int), good["label"].astype(int), strict=True
    ):
        labels.add(decision_key(request_id.encode(), row), int(label))


def add_label_file(source: Path, ground_truth: Path) -> tuple[Path, int, int]:
    """Check a label file and copy it into the ground-truth folder (whole or not at all): (where, valid, invalid).
    A file that cannot be read, or lacks the columns, raises FeedbackError saying what to fix."""
    if source.suffix not in FILE_SUFFIXES:
        raise FeedbackError(f"{source} is neither .csv nor .parquet; write the labels as one of them")
    frame = read_label_file(source)
    ok = valid_rows(frame)
    if not ok.any():
        raise FeedbackError(
            f"none of the {len(frame)} rows of {source.name} is a label (request_id as /score answered it, row >= 0, "
            "label 0 or 1, observed_at ISO 8601 or Unix seconds): nothing was added"
        )
    ground_truth.mkdir(parents=True, exist_ok=True)
    target = ground_truth / source.name
    partial = ground_truth / f".{source.name}.{os.getpid()}.partial"  # a dot file: the reader skips it
    shutil.copyfile(source, partial)
    os.replace(partial, target)
    return target, int(ok.sum()), int((~ok).sum())
