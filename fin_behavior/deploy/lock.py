"""One rollout at a time per endpoint, whatever starts it: a job's step, a sensor's run, the CLI, two
`dagster job execute` processes. An OS file lock (flock, through the filelock library) on the endpoint's
directory: the kernel releases it when its holder exits, however it exits, so a crashed deployer never
leaves the endpoint locked. Beside it, who holds it, so a second rollout that gives up can say whom it
waited for."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from fin_behavior.records import read_json, write_json

LOCK_FILE, HOLDER_FILE = "rollout.lock", "rollout.json"


class RolloutInProgressError(RuntimeError):
    """Another rollout held the endpoint for longer than this one was willing to wait; nothing was changed."""


def holder(root: Path) -> dict | None:
    """Who holds (or last held) the endpoint's rollout lock."""
    try:
        return read_json(root / HOLDER_FILE)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def exclusive_rollout(root: Path, what: str, timeout: float, log=print) -> Iterator[None]:
    """Hold the endpoint for `what` (e.g. "deploy of financial-behavior-model v3"); wait at most `timeout` s."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = FileLock(root / LOCK_FILE, timeout=timeout)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        busy = holder(root) or {}
        log(f"waiting for the rollout in progress on this endpoint: {_describe(busy)} (at most {timeout:g} s)")
        try:
            lock.acquire()
        except Timeout:
            raise RolloutInProgressError(
                f"another rollout holds this endpoint: {_describe(holder(root) or busy)}; waited {timeout:g} s "
                "(setting rollout_lock_timeout_seconds). Nothing was changed: run again when it has finished"
            ) from None
    try:
        write_json(
            root / HOLDER_FILE, {"what": what, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        )
        yield
    finally:
        lock.release()


def _describe(entry: dict) -> str:
    if not entry:
        return "unknown holder"
    since = time.strftime("%H:%M:%S", time.localtime(entry.get("since", 0)))
    return f"{entry.get('what', '?')} (pid {entry.get('pid', '?')} on {entry.get('host', '?')}, since {since})"
