"""Ground truth in: the labels the scoring service took (POST /feedback, its feedback log) and the label files
dropped in the ground-truth folder (CSV or Parquet with request_id, row, label, observed_at), as one table keyed
by decision: request id and row. A bad label (malformed, not 0/1) or a second label for the same decision is
counted, never fatal: the first label of a decision wins, the log before the folder.

The feedback log is read at C speed where it can be: the service writes its fields in one order
(`{"time":T,"request_id":"R","row":N,"label":L,"observed_at":O}`), so a split at the commas reads them; any
other line is parsed as JSON and validated like a posted label."""

from __future__ import annotations

import json
import os
import shutil
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
    """Decision key -> (label, observed_at), and what was not taken."""

    table: dict[bytes, tuple[int, float]] = field(default_factory=dict)
    invalid: int = 0  # malformed, or a label not 0/1
    duplicates: int = 0  # a second label for a decision already labelled (the first is kept)
    files: int = 0

    def add(self, key: bytes, label: int, observed_at: float) -> None:
        if key in self.table:
            self.duplicates += 1
        else:
            self.table[key] = (label, observed_at)

    def counts(self) -> dict[str, int]:
        return {"labels": len(self.table), "invalid": self.invalid, "duplicates": self.duplicates, "files": self.files}


def ground_truth_home(settings: Settings) -> Path:
    """The folder label files are dropped in (setting ground_truth_dir)."""
    return settings.ground_truth_dir or settings.var_dir / "ground_truth"


def feedback_dir(log_dir: Path) -> Path:
    return log_dir / FEEDBACK_DIR


def read_labels(log_dir: Path, ground_truth: Path | None) -> Labels:
    """Every label of the feedback logs under `log_dir` (current and rotated), then of the folder's files."""
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


def _read_log(path: Path, labels: Labels) -> None:
    add, table = labels.add, labels.table
    with path.open("rb") as log:
        for line in log:
            if not line.endswith(b"\n"):
                continue  # still being written
            parts = line.split(b",")
            try:
                if len(parts) == 5 and parts[1].startswith(b'"request_id":"') and parts[3].startswith(b'"label":'):
                    label = parts[3][8:]
                    if label not in (b"0", b"1"):
                        raise ValueError(label)
                    key = decision_key(parts[1][14:-1], int(parts[2][6:]))
                    if key in table:
                        labels.duplicates += 1
                    else:
                        table[key] = (1 if label == b"1" else 0, float(parts[4][14:-2]))
                    continue
                entry = json.loads(line)
                entry = validate_label({k: v for k, v in entry.items() if k != "time"}, entry.get("time", 0.0))
            except (ValueError, FeedbackError, AttributeError, IndexError):
                labels.invalid += 1
                continue
            add(decision_key(entry["request_id"].encode(), entry["row"]), entry["label"], entry["observed_at"])


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
    times = _times(good["observed_at"]).to_numpy()
    for request_id, row, label, observed in zip(
        good["request_id"].astype(str), good["row"].astype(int), good["label"].astype(int), times, strict=True
    ):
        labels.add(decision_key(request_id.encode(), row), label, float(observed))


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
