"""One append-only history of every decision about a model, as JSON lines in `<var_dir>/audit/history.jsonl`.

Each record carries its number (`seq`), the hash of the record before it (`prev`) and its own hash (`hash`:
sha256 over the canonical JSON of everything else in it), so an edited, deleted, inserted or reordered record
breaks the chain where it happened. A chain rewritten whole (every hash recomputed) is caught by its anchors:
at each alias move the chain's head is also written as a tag on the MLflow model version (`audit.head`), a
store the history file is not kept in; the last anchor also tells a tail cut off the file.

Writers (jobs, sensors, the CLI, the submissions API; any process) append under one OS file lock beside the
file (filelock, as the rollout lock in deploy/lock.py: released by the kernel when its holder exits)."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

HISTORY_FILE, LOCK_FILE = "history.jsonl", "history.lock"
HEAD_TAG = "audit.head"  # "<seq>:<hash>" on the MLflow model version, written at each alias move
GENESIS = "0" * 64

# The events, as they are written (one vocabulary for the writers, the reader and the docs).
REGISTERED, GATE_FAILED = "registered", "gate_failed"
APPROVED, REJECTED = "approved", "rejected"
ALIAS_MOVED = "alias_moved"
DEPLOY_STARTED, DEPLOY_SUCCEEDED, DEPLOY_FAILED = "deploy_started", "deploy_succeeded", "deploy_failed"
AUTOMATIC_ROLLBACK, ROLLBACK = "automatic_rollback", "rollback"
ENDPOINT_STOPPED, ENDPOINT_STARTED = "endpoint_stopped", "endpoint_started"
SUBMISSION_ACCEPTED, SUBMISSION_SERVED = "submission_accepted", "submission_served"
CHALLENGER_STARTED, CHALLENGER_FAILED = "challenger_started", "challenger_failed"
CHALLENGER_STOPPED = "challenger_stopped"


class AuditError(RuntimeError):
    """The history could not be written (its lock held too long, its directory not writable)."""


def actor(configured: str = "") -> str:
    """Who acts: the `actor` setting (FIN_BEHAVIOR_ACTOR), else the OS user."""
    if configured.strip():
        return configured.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's numeric user)
        return f"uid {os.getuid()}"


def record_hash(record: dict) -> str:
    """sha256 of the record's canonical JSON (sorted keys, no spaces), its own `hash` left out."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def history_dir(var_dir: Path) -> Path:
    return var_dir / "audit"


@dataclass(frozen=True)
class History:
    directory: Path
    lock_timeout: float = 60.0
    mirror_url: str = ""  # the artifact store (ARTIFACT_STORE_URL): a copy of the file after each append

    @classmethod
    def of(cls, settings) -> History:
        return cls(history_dir(settings.var_dir), settings.audit_lock_timeout_seconds, settings.artifact_store_url)

    @property
    def path(self) -> Path:
        return self.directory / HISTORY_FILE

    def append(self, event: str, model: str, version: str | None, who: str, **details: object) -> dict:
        """Write one record at the end of the chain; returns it (with its seq and hash)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = FileLock(self.directory / LOCK_FILE, timeout=self.lock_timeout)
        try:
            with lock:
                last = _last_record(self.path)
                record = {
                    "seq": (last["seq"] + 1) if last else 1,
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "actor": who,
                    "event": event,
                    "model": model,
                    "version": version,
                    "details": {k: v for k, v in details.items() if v is not None},
                    "prev": last["hash"] if last else GENESIS,
                }
                record["hash"] = record_hash(record)
                line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(line)
                    out.flush()
                    os.fsync(out.fileno())
                if self.mirror_url:
                    _mirror(self.mirror_url, self.directory.parent, self.path)
        except Timeout:
            raise AuditError(
                f"the history's lock ({self.directory / LOCK_FILE}) was held for over {self.lock_timeout:g} s "
                "(setting audit_lock_timeout_seconds); nothing was recorded: run again"
            ) from None
        return record

    def records(self) -> list[dict]:
        """The records as written (unchecked: `verify` checks them)."""
        return [record for _, record, _ in _lines(self.path) if record is not None]


def _mirror(url: str, var_dir: Path, path: Path) -> None:
    from fin_behavior.storage.remote import artifact_store

    store = artifact_store(url, var_dir)
    if store is not None:
        store.push_file(path)


def _last_record(path: Path) -> dict | None:
    """The file's last record, read from its end (the file only grows)."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            chunk = 4096
            while True:
                start = max(0, size - chunk)
                file.seek(start)
                lines = file.read(size - start).splitlines()
                if len(lines) > 1 or start == 0:
                    break
                chunk *= 4
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                raise AuditError(
                    f"the last line of {path} is not a record: the history was damaged; run `fin-behavior audit "
                    "verify` and restore the file before recording anything more"
                ) from None
            return record
    return None


def _lines(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, record or None when the line is not one, the raw line)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            yield number, None, line
            continue
        yield number, record if isinstance(record, dict) else None, line


@dataclass(frozen=True)
class Anchor:
    """The chain's head as recorded in MLflow on a model version at an alias move."""

    seq: int
    hash: str
    where: str  # e.g. "financial-behavior-model v2"

    @classmethod
    def parse(cls, tag: str, where: str) -> Anchor | None:
        seq, _, digest = tag.partition(":")
        return cls(int(seq), digest, where) if seq.isdigit() and len(digest) == 64 else None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    problems: list[str]

    def render(self) -> str:
        if self.ok:
            return f"the history holds {self.records} records; the chain and its anchors in MLflow agree"
        return "\n".join(self.problems)


def verify(path: Path, anchors: Iterable[Anchor] = ()) -> Verdict:
    """Walk the chain; the first record that breaks it is named (by its line and number) with what was done to
    it, and a tail cut below the newest anchor is said."""
    entries = list(_lines(path))
    problems: list[str] = []
    expected_seq, expected_prev = 1, GENESIS
    by_seq: dict[int, dict] = {}
    for index, (line, record, _) in enumerate(entries):
        where = f"line {line}"
        if record is None or not isinstance(record.get("seq"), int) or not isinstance(record.get("hash"), str):
            problems.append(f"{where} is not a record of the history: it was edited (or written by hand)")
            break
        seq = record["seq"]
        if record_hash(record) != record["hash"]:
            problems.append(f"record {seq} ({where}) was edited: its content does not match its hash")
            break
        if seq != expected_seq:
            problems.append(_out_of_place(entries, index, expected_seq))
            break
        if record.get("prev") != expected_prev:
            problems.append(
                f"record {seq} ({where}) does not follow the record before it (its prev hash differs): it was "
                "inserted, or the one before it was replaced"
            )
            break
        by_seq[seq] = record
        expected_seq, expected_prev = seq + 1, record["hash"]
    if problems:
        return Verdict(False, len(entries), problems)
    last = expected_seq - 1
    for anchor in sorted(anchors, key=lambda a: a.seq):
        held = by_seq.get(anchor.seq)
        if held is None:
            problems.append(
                f"the tail was cut: MLflow recorded record {anchor.seq} as the head at {anchor.where}, but the "
                f"history ends at record {last}"
            )
        elif held["hash"] != anchor.hash:
            problems.append(
                f"record {anchor.seq} differs from the head MLflow recorded at {anchor.where}: the history was "
                "rewritten up to there (hashes recomputed)"
            )
        if problems:
            break
    return Verdict(not problems, len(entries), problems)


def _out_of_place(entries: list[tuple[int, dict | None, str]], index: int, expected: int) -> str:
    """What was done where the numbers stop following each other: a number seen before (inserted), the expected
    one further on (reordered, unless this record links to nothing: inserted), or the expected one gone (deleted)."""
    line, record, _ = entries[index]
    assert record is not None
    seq = record["seq"]
    earlier = {r.get("seq"): n for n, r, _ in entries[:index] if r}
    later = {r.get("seq") for _, r, _ in entries[index + 1 :] if r}
    hashes = {r.get("seq"): r.get("hash") for _, r, _ in entries if r} | {0: GENESIS}
    if seq in earlier:
        return f"record {seq} appears twice (lines {earlier[seq]} and {line}): one of them was inserted"
    if expected in later:
        if record.get("prev") != hashes.get(seq - 1):
            return f"record {seq} (line {line}) was inserted: it follows no record of the history"
        return f"record {seq} (line {line}) comes before record {expected}: records were reordered"
    if seq < expected:
        return f"record {seq} (line {line}) is out of order: records were reordered or inserted"
    gone = (
        f"record {expected} before line {line} (record {seq}) was"
        if seq == expected + 1
        else (f"records {expected}-{seq - 1} before line {line} (record {seq}) were")
    )
    return f"{gone} deleted"


def parse_since(text: str) -> float:
    """An ISO date or time (UTC unless it says otherwise), as a timestamp; ValueError naming the form."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is not a date or time: write e.g. 2026-12-07 or 2026-12-07T08:30") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def timestamp(record: dict) -> float:
    return datetime.fromisoformat(record["time"]).timestamp()


@dataclass(frozen=True)
class Interval:
    model: str
    version: str
    since: str
    until: str | None  # None: still production
    actor: str  # who moved production to it


def production_intervals(records: Iterable[dict]) -> list[Interval]:
    """Which version held `production` over which interval, per model, from the alias moves."""
    open_: dict[str, Interval] = {}
    done: list[Interval] = []
    for record in records:
        details = record.get("details", {})
        if record.get("event") != ALIAS_MOVED or details.get("alias") != "production":
            continue
        model = record["model"]
        if model in open_:
            done.append(_closed(open_.pop(model), record["time"]))
        open_[model] = Interval(model, str(record["version"]), record["time"], None, record["actor"])
    return sorted([*done, *open_.values()], key=lambda i: (i.model, i.since))


def _closed(interval: Interval, until: str) -> Interval:
    return Interval(interval.model, interval.version, interval.since, until, interval.actor)


def describe(record: dict) -> str:
    """One line a person reads."""
    details = record.get("details", {})
    text = ", ".join(f"{k}={v}" for k, v in details.items())
    version = f" v{record['version']}" if record.get("version") else ""
    head = f"#{record['seq']:<4} {record['time']}  {record['actor']:<16} {record['event']:<18}"
    return f"{head} {record['model']}{version}" + (f"  {text}" if text else "")
