"""What the platform last read of one registered model (its `candidate` and `production` and their tags), kept
on local disk with the stamp of the MLflow store it came from, so that a run with nothing to do answers its
registry questions without importing MLflow (seconds here) or opening its store.

The view is used only while the store provably has not changed since it was read: for a SQLite store (the
default) the stamp is SQLite's file change counter (in the database header, incremented by every committed
write) with the size and modification time of the database file and of its journal and WAL files (in WAL mode
writes land there first), so every write to the store changes it (a new run, a tag, an alias moved by hand in
the MLflow UI). With any
other store there is no stamp to compare, and the view is never used. It is a cache, never the truth: whoever
writes to the registry writes to MLflow first and refreshes the view from MLflow after (`refresh`); a reader that
finds no valid view asks MLflow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from fin_behavior.ml.registry import CANDIDATE, PRODUCTION, alias_version
from fin_behavior.storage.atomic import write_atomic

_SQLITE = "sqlite:///"


def store_stamp(tracking_uri: str) -> str | None:
    """The SQLite database's change counter, and size and mtime of it and its -journal/-wal files; None for a
    store without a file."""
    if not tracking_uri.startswith(_SQLITE):
        return None
    database = Path(tracking_uri.removeprefix(_SQLITE))
    try:
        with database.open("rb") as db:
            counter = int.from_bytes(db.read(28)[24:28], "big")  # the header's "file change counter"
    except FileNotFoundError:
        return None
    parts = [str(counter)]
    for path in (database, database.with_name(database.name + "-journal"), database.with_name(database.name + "-wal")):
        try:
            stat = path.stat()
        except FileNotFoundError:
            parts.append("-")
            continue
        parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


@dataclass(frozen=True)
class RegistryView:
    tracking_uri: str
    model_name: str
    stamp: str
    aliases: dict[str, str]  # candidate / production -> version (absent: not set)
    tags: dict[str, dict[str, str]]  # version -> its tags (its evidence and bundle digest), for those versions

    def alias(self, alias: str) -> str | None:
        return self.aliases.get(alias)


def view_path(var_dir: Path, name: str) -> Path:
    return var_dir / "cache" / f"registry-{name}.json"


def load(var_dir: Path, tracking_uri: str, name: str) -> RegistryView | None:
    """The view of `name` when the store is exactly as it was when it was read; None otherwise."""
    try:
        view = RegistryView(**json.loads(view_path(var_dir, name).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if (view.tracking_uri, view.model_name) != (tracking_uri, name) or view.stamp != store_stamp(tracking_uri):
        return None
    return view


def refresh(client, var_dir: Path, tracking_uri: str, name: str) -> None:
    """Read `name`'s aliases and their versions' tags from MLflow and keep them with the store's stamp, taken
    before reading (a write during the read leaves a view that no reader takes)."""
    path = view_path(var_dir, name)
    stamp = store_stamp(tracking_uri)
    if stamp is None:
        return
    aliases = {a: v for a in (CANDIDATE, PRODUCTION) if (v := alias_version(client, name, a)) is not None}
    tags = {v: dict(client.get_model_version(name, v).tags) for v in set(aliases.values())}
    view = json.dumps(asdict(RegistryView(tracking_uri, name, stamp, aliases, tags)))
    write_atomic(path, lambda tmp: tmp.write_text(view))
