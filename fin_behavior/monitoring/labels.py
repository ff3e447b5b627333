"""Ground truth in: the labels the scoring service took (POST /feedback, its feedback log) and the label files
dropped in the ground-truth folder (CSV or Parquet with request_id, row, label, observed_at), keyed by decision:
request id and row, and for a posted label the client whose key posted it. A bad label (malformed, not 0/1) or a
second label for the same decision is counted, never fatal: the first label of a decision wins.

Whose label joins which decision (`Labels.take`; nothing a client sends is trusted beyond what its key may do, and
request ids are the clients' own and guessable):
- a label posted with a client's key joins only a decision that same key made (the prediction log names it). Key
  B's label for key A's decision is counted like a label for an id never scored (`unknown`), and never stands in
  for A's own label, whichever came first;
- a label posted with the platform's probe key, a label file's (the bank's own systems) and a feedback line that
  names no client (written before lines named one) are unscoped: they join any decision with their id;
- a decision takes its own client's first label, else the first unscoped one. A decision whose line names no client
  (written before lines named one) takes the first label any client posted for its id, else the first unscoped
  one, as before lines named clients.

The feedback log is read at C speed where it can be: the service writes its fields in one order
(`{"time":T,"client":"C","request_id":"R","row":N,"label":L,"observed_at":O}`, no client for the probe key), so
one regular expression reads a chunk of such lines; a chunk with any other line is read line by line, each parsed
as JSON and validated like a posted label."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fin_behavior.serving.feedback import FEEDBACK_DIR, FeedbackError, validate_label
from fin_behavior.serving.prediction_log import CLIENT_ID
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
    """The labels by decision (whose joins which: the module doc), and what was not taken. (When an outcome was
    observed is checked and kept in the logs and files; the window is one of prediction time.)"""

    unscoped: dict[bytes, int] = field(default_factory=dict)  # decision key -> label
    scoped: dict[tuple[bytes, bytes], int] = field(default_factory=dict)  # (client, decision key) -> label
    invalid: int = 0  # malformed, or a label not 0/1
    duplicates: int = 0  # a second label for a decision already labelled (the first is kept)
    files: int = 0
    _by_key: dict[bytes, list[tuple[bytes, bytes]]] | None = field(default=None, repr=False)  # made when needed

    def __len__(self) -> int:
        return len(self.unscoped) + len(self.scoped)

    def add(self, client: bytes, key: bytes, label: int) -> None:
        """One label of decision `key` posted by `client` (b"": unscoped); the first of a decision stays."""
        self._by_key = None
        if client and (client, key) not in self.scoped:
            self.scoped[client, key] = label
        elif not client and key not in self.unscoped:
            self.unscoped[key] = label
        else:
            self.duplicates += 1

    def add_all(self, clients: Sequence[bytes], keys: Sequence[bytes], labels: Sequence[int]) -> None:
        """Labels in the order read: the first of each decision (and client) stays, the others are duplicates."""
        self._by_key = None
        if b"" not in clients:
            self._keep_first(self.scoped, list(zip(clients, keys, strict=True)), labels)
        elif clients.count(b"") == len(clients):
            self._keep_first(self.unscoped, keys, labels)
        else:
            for client, key, label in zip(clients, keys, labels, strict=True):
                self.add(client, key, label)

    def _keep_first(self, table: dict, keys: Sequence, labels: Sequence[int]) -> None:
        fresh = dict(zip(reversed(keys), reversed(labels), strict=True))  # the first label of a key wins
        self.duplicates += len(keys) - len(fresh)
        for key in fresh.keys() & table.keys():
            del fresh[key]
            self.duplicates += 1
        table.update(fresh)

    def take(self, clients: Sequence[bytes], keys: Sequence[bytes], keep: bool = False) -> np.ndarray:
        """The label of each decision (decision `keys[i]` made by the key `clients[i]` names; b"" on a line that
        names none), -1 where it has none; the rules of the module doc. The labels a decision takes leave the table
        (what is left at the end is `unknown`), unless `keep`; an unscoped label of a decision that took its own
        client's is counted as a duplicate. At C speed: one dictionary look-up per decision and table."""
        found = np.full(len(keys), -1, dtype=np.int8)
        if self.scoped:
            own: Callable[[tuple[bytes, bytes], int], int] = self.scoped.get if keep else self.scoped.pop
            found = np.fromiter(map(own, zip(clients, keys, strict=True), repeat(-1)), dtype=np.int8, count=len(keys))
            if b"" in clients:
                self._take_any_client(clients, keys, found, keep)
        if self.unscoped:
            anyone: Callable[[bytes, int], int] = self.unscoped.get if keep else self.unscoped.pop
            fallback = np.fromiter(map(anyone, keys, repeat(-1)), dtype=np.int8, count=len(keys))
            has_own = found >= 0
            if not keep:
                self.duplicates += int((has_own & (fallback >= 0)).sum())
            found = np.where(has_own, found, fallback)
        return found

    def _take_any_client(self, clients: Sequence[bytes], keys: Sequence[bytes], found: np.ndarray, keep: bool) -> None:
        """Decisions whose lines name no client: the first label any client posted for the id (the rest of them
        are duplicates)."""
        if self._by_key is None:
            self._by_key = {}
            for scoped in self.scoped:
                self._by_key.setdefault(scoped[1], []).append(scoped)
        claim = self.scoped.get if keep else self.scoped.pop
        for i, client in enumerate(clients):
            if client:
                continue
            for scoped in self._by_key.get(keys[i], ()):
                label = claim(scoped, -1)
                if label < 0:
                    continue
                if found[i] < 0:
                    found[i] = label
                    if keep:
                        break
                else:
                    self.duplicates += 1

    def counts(self) -> dict[str, int]:
        return {"labels": len(self), "invalid": self.invalid, "duplicates": self.duplicates, "files": self.files}


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
_LABEL = re.compile(
    rb'\{"time":[0-9.]+,(?:"client":"(' + CLIENT_ID + rb')",)?'
    rb'"request_id":"([A-Za-z0-9._-]{1,64})","row":([0-9]+),"label":([01]),"observed_at":[0-9.]+\}\n'
)
_CLIENT = re.compile(CLIENT_ID.decode())


def _read_log(path: Path, labels: Labels) -> None:
    from fin_behavior.monitoring.outcomes import chunks

    for chunk in chunks(path):
        found = _LABEL.findall(chunk)
        if len(found) != chunk.count(b"\n") or len(found) != chunk.count(b'{"time":'):  # not all the service's
            for line in chunk.splitlines(keepends=True):
                _read_line(line, labels)
            continue
        clients, ids, rows, ys = zip(*found, strict=True)
        if rows.count(b"0") == len(rows):
            keys: Sequence[bytes] = ids
        else:
            keys = [rid if row == b"0" else b"%s#%s" % (rid, row) for rid, row in zip(ids, rows, strict=True)]
        labels.add_all(clients, keys, list(map(int, ys)))


def _read_line(line: bytes, labels: Labels) -> None:
    try:
        entry = json.loads(line)
        client = entry.get("client", "")
        if not isinstance(client, str) or (client and not _CLIENT.fullmatch(client)):
            raise FeedbackError("not a client's name")
        entry = validate_label({k: v for k, v in entry.items() if k not in ("time", "client")}, entry.get("time", 0.0))
    except (ValueError, FeedbackError, AttributeError):
        labels.invalid += 1
        return
    labels.add(client.encode(), decision_key(entry["request_id"].encode(), entry["row"]), entry["label"])


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
    keys = [
        decision_key(request_id.encode(), row)
        for request_id, row in zip(good["request_id"].astype(str), good["row"].astype(int), strict=True)
    ]
    labels.add_all([b""] * len(keys), keys, good["label"].astype(int).tolist())  # the bank's own: unscoped


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
