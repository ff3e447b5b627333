"""Files written whole or not at all: a reader sees the old content or the new, never half of it.

The JSON records stages hand each other are written by `fin_behavior.records.write_json` (light: the serving
side shares that module); every other file a stage publishes goes through `write_atomic`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` to a hidden sibling, then rename it over `path` (same directory, so the rename is atomic).

    The sibling's name ends in `.partial` and starts with a dot: globs for the real files (`*.jsonl`,
    `*.csv`) never see it, and a crash leaves nothing a reader takes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
