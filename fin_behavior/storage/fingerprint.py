"""Content fingerprints of files that are cheap when nothing changed: stat first, hash only on change."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fin_behavior.records import sha256_file
from fin_behavior.storage.atomic import write_atomic


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def file_fingerprint(path: str | os.PathLike[str], cache_file: str | os.PathLike[str]) -> str:
    """sha256 of `path`'s content, reused from `cache_file` while size, mtime and inode are unchanged."""
    path, cache_file = Path(path).resolve(), Path(cache_file)
    key = _stat_key(path)
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(str(path))
    if entry and entry.get("stat") == key:
        return entry["sha256"]
    digest = sha256_file(path)
    cache[str(path)] = {"stat": key, "sha256": digest}
    write_atomic(cache_file, lambda tmp: tmp.write_text(json.dumps(cache)))
    return digest
