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
- a decision takes its own client's first label, else the first unscoped one still unclaimed. A decision whose line
  names no client (written before lines named one) takes the first unscoped label of its id, else the first label a
  client posted for it: any label joined it before lines named clients. A decision takes one label and leaves the
  others of its id to the next decision of that id (or `unknown`), so whichever file is read first, B's decision
  with A's id never takes the bank's label from A's, nor an old decision A's own label.

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
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fin_behavior.serving import prediction_log
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


# On every line the service writes (inputs lines and feedback lines alike) the client's name stands right before the
# request id: `"client":"C","request_id":"R"`. A client's decision, and a label its key posted, are keyed by the
# bytes from C to R (`owned_key`), which one group of a regular expression takes from the line as they are: nothing
# is made per line to key it. A request id holds no `"` (request_ids.RULE), so an owned key is never a plain one.
_CLIENT, _REQUEST_ID = prediction_log.key("client"), prediction_log.key("request_id")
_BETWEEN = b'",' + _REQUEST_ID + b'"'
_ID = rb"[A-Za-z0-9._-]{1,64}"
# The two groups a line's decision (or label) is keyed by: the owned key when the line names its client, else the id.
_OWNED = rb'"(' + prediction_log.CLIENT_ID + _BETWEEN + _ID + rb')"'
KEYS = rb"(?:" + _CLIENT + _OWNED + rb"|" + _REQUEST_ID + rb'"(' + _ID + rb')")'


def owned_key(client: bytes, key: bytes) -> bytes:
    """How decision `key` asked for (or labelled) with `client`'s key is keyed; with b"" (no client) `key` itself."""
    return client + _BETWEEN + key if client else key


def _is_owned(key: bytes) -> bool:
    return b'"' in key


def _plain(key: bytes) -> bytes:
    """The decision key an owned key holds (a plain one is its own)."""
    return key.rpartition(b'"')[2]


_PLAIN_OF_OWNED = itemgetter(slice(prediction_log.CLIENT_DIGITS + len(_BETWEEN), None))  # `_plain` at C speed


@dataclass
class Labels:
    """The labels by decision (whose joins which: the module doc), and what was not taken. (When an outcome was
    observed is checked and kept in the logs and files; the window is one of prediction time.)"""

    table: dict[bytes, int] = field(default_factory=dict)  # owned key (a client's) or decision key (unscoped) -> label
    any_unscoped: bool = False  # whether any unscoped label was read: only then does the join look for them
    invalid: int = 0  # malformed, or a label not 0/1
    duplicates: int = 0  # a second label for a decision already labelled (the first is kept)
    files: int = 0
    _owned_by_id: dict[bytes, list[bytes]] | None = field(default=None, repr=False)  # for lines naming no client

    def __len__(self) -> int:
        return len(self.table)

    def add(self, client: bytes, key: bytes, label: int) -> None:
        """One label of decision `key` posted by `client` (b"": unscoped); the first of a decision stays."""
        self.add_all([owned_key(client, key)], [label], unscoped=not client)

    def add_all(self, keys: Sequence[bytes], labels: Sequence[int], unscoped: bool) -> None:
        """Labels in the order read, each keyed by `owned_key` (`unscoped`: whether any of them is): the first of a
        key stays, the others are duplicates."""
        self._owned_by_id = None
        self.any_unscoped |= unscoped
        fresh = dict(zip(keys, labels, strict=True))  # in the order read: `_take_any_client` takes the first
        if len(fresh) < len(keys):  # a key twice: its first label wins
            self.duplicates += len(keys) - len(fresh)
            fresh.update(zip(reversed(keys), reversed(labels), strict=True))
        for key in fresh.keys() & self.table.keys():
            del fresh[key]
            self.duplicates += 1
        self.table.update(fresh)

    def take(self, keys: Sequence[bytes], nameless: bool, keep: bool = False) -> np.ndarray:
        """The label of each decision (keyed by `owned_key`; `nameless`: whether any is on a line that names no
        client, keyed by its plain key), -1 where it has none; the rules of the module doc. The labels a decision
        takes leave the table (what is left at the end is `unknown`), unless `keep`. A decision that has its own
        client's label takes nothing else: an unscoped label, or another client's, stays for the next decision
        with that id, whichever file or line is read first. At C speed: a dictionary look-up per decision, and a
        second one for those still without a label where unscoped labels were read."""
        found = _claim(self.table, keys, keep)  # its client's label; on a line naming no client, an unscoped one
        if self.any_unscoped:
            missing = np.flatnonzero(found < 0)
            plain = _plain if nameless else _PLAIN_OF_OWNED
            found[missing] = _claim(self.table, [plain(keys[i]) for i in missing.tolist()], keep)
        if nameless:
            self._take_any_client(keys, found, keep)
        return found

    def _take_any_client(self, keys: Sequence[bytes], found: np.ndarray, keep: bool) -> None:
        """Decisions on lines that name no client (written before lines named one) and still without a label: the
        first label a client posted for the id (only that one leaves the table: another client's stays for its own
        decision of that id)."""
        if self._owned_by_id is None:
            self._owned_by_id = {}
            for owned in filter(_is_owned, self.table):
                self._owned_by_id.setdefault(_plain(owned), []).append(owned)
        for i, key in enumerate(keys):
            if _is_owned(key) or found[i] >= 0:
                continue
            for owned in self._owned_by_id.get(key, ()):
                if (label := self.table.get(owned, -1)) >= 0:
                    found[i] = label
                    if not keep:
                        del self.table[owned]
                    break

    def counts(self) -> dict[str, int]:
        return {"labels": len(self), "invalid": self.invalid, "duplicates": self.duplicates, "files": self.files}


def _claim(table: dict[bytes, int], keys: Sequence[bytes], keep: bool) -> np.ndarray:
    """The label of each key in `table`, -1 for none; taken out of the table unless `keep`."""
    look_up: Callable[[bytes, int], int] = table.get if keep else table.pop
    return np.fromiter(map(look_up, keys, repeat(-1)), dtype=np.int8, count=len(keys))


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
_LABEL = re.compile(rb'\{"time":[0-9.]+,' + KEYS + rb',"row":([0-9]+),"label":([01]),"observed_at":[0-9.]+\}\n')
_CLIENT_ID = re.compile(prediction_log.CLIENT_ID.decode())


def _read_log(path: Path, labels: Labels) -> None:
    from fin_behavior.monitoring.outcomes import chunks

    for chunk in chunks(path):
        found = _LABEL.findall(chunk)
        if len(found) != chunk.count(b"\n") or len(found) != chunk.count(b'{"time":'):  # not all the service's
            for line in chunk.splitlines(keepends=True):
                _read_line(line, labels)
            continue
        owned, plain, rows, ys = zip(*found, strict=True)
        ids = either(owned, plain)
        if rows.count(b"0") == len(rows):
            keys: Sequence[bytes] = ids
        else:
            keys = [rid if row == b"0" else b"%s#%s" % (rid, row) for rid, row in zip(ids, rows, strict=True)]
        labels.add_all(keys, list(map(int, ys)), unscoped=b"" in owned)


def either(owned: Sequence[bytes], plain: Sequence[bytes]) -> Sequence[bytes]:
    """The key of each line from the two groups of `KEYS` (one of them is empty on every line)."""
    if plain.count(b"") == len(plain):  # every line names its client: the service's since lines name it
        return owned
    if owned.count(b"") == len(owned):
        return plain
    return [o or p for o, p in zip(owned, plain, strict=True)]


def _read_line(line: bytes, labels: Labels) -> None:
    try:
        entry = json.loads(line)
        client = entry.get("client", "")
        if not isinstance(client, str) or (client and not _CLIENT_ID.fullmatch(client)):
            raise FeedbackError("not a client's name")
        entry = validate_label({k: v for k, v in entry.items() if k not in ("time", "client")}, entry.get("time", 0.0))
    except (ValueError, FeedbackError, AttributeError, RecursionError):  # a served model writes its color's log
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
    labels.add_all(keys, good["label"].astype(int).tolist(), unscoped=True)  # the bank's own


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
