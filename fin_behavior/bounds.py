"""Kernel bounds on everything one confined command starts: memory of every kind the kernel charges (anonymous,
page cache, tmpfs and shared memory, kernel memory), the number of processes, and CPU time, through a control
group of its own, on cgroup v1 or v2; and disk, through a size-limited tmpfs mounted by the platform.

Why the kernel's files and not a tool: the tools that would do it are not there or not both-handed. libcgroup's
`cgset` in Debian 12 (2.0.2) takes each version's own file names (`cgxset`, which translates, arrives in 3.0);
`systemd-run --scope` needs systemd as the init, which containers and CI lack; the Python packages for it are
v1-only or unmaintained. The interface is a directory and three files per controller, so this module writes
them, and says which controller is missing when it cannot (`unavailable()`): callers refuse then, unless the
operator accepts the weaker mode (SUBMISSION_ACCEPT_WEAKER_BOUNDS).

A per-process address-space limit (RLIMIT_AS) is no bound: several processes, /dev/shm and System V memory each
get their own. A control group's limit is the sum of all of them."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
PARENT = "fin-behavior"  # every group this platform makes sits below this one, inside the platform's own group
_CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # everything its processes hold in memory, tmpfs and shared memory included; no swap
    processes: int  # processes and threads at once
    cpus: float  # CPU time per second of wall time (1.0: one core)

    def describe(self) -> str:
        return f"{self.memory_bytes >> 20} MiB of memory, {self.processes} processes, {self.cpus:g} CPUs"


@dataclass(frozen=True)
class _Layout:
    version: int  # 1 or 2
    directories: dict[str, Path]  # controller -> the platform's own group's directory (v2: one, the same for all)


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, super options) of every cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if tail and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[4], tail[0], set(tail[2].split(",")) if len(tail) > 2 else set()))
    return found


def _own_groups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's group path, from /proc/self/cgroup."""
    groups = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


@functools.cache
def _layout() -> _Layout | str:
    """Where this platform's groups go, or why they cannot be made."""
    try:
        mounts, own = _mounts(), _own_groups()
    except OSError as exc:
        return f"cannot read this process's control groups: {exc}"
    for point, kind, _ in mounts:  # v2 when it has every controller (a pure v2 host)
        if kind != "cgroup2":
            continue
        directory = Path(point) / own.get("", "/").lstrip("/")
        with contextlib.suppress(OSError):
            if set(CONTROLLERS) <= set((Path(point) / "cgroup.controllers").read_text().split()):
                return _Layout(2, dict.fromkeys(CONTROLLERS, directory))
    directories: dict[str, Path] = {}
    missing: list[str] = []
    for controller in CONTROLLERS:
        mount = next((p for p, kind, options in mounts if kind == "cgroup" and controller in options), None)
        if mount is None:
            missing.append(controller)
        else:
            directories[controller] = Path(mount) / own.get(controller, "/").lstrip("/")
    if missing:
        return (
            f"no cgroup controller for {', '.join(missing)} (neither a cgroup v2 hierarchy with memory, pids and "
            "cpu, nor v1 hierarchies of each, is mounted)"
        )
    return _Layout(1, directories)


@functools.cache
def unavailable() -> str | None:
    """Why this machine cannot bound a confined command's memory, processes and CPU; None when it can."""
    layout = _layout()
    if isinstance(layout, str):
        return layout
    if os.geteuid() != 0:
        return "the platform does not run as root, so it cannot make control groups"
    try:
        group = ControlGroup.create(f"probe-{os.getpid()}", Limits(64 << 20, 16, 0.5))  # one per asker
        group.remove()
    except OSError as exc:
        return f"cannot make a control group: {exc}"
    return None


class ControlGroup:
    """One group, made with its limits; processes join it before they exec (`join`, in a preexec_fn)."""

    def __init__(self, name: str, layout: _Layout):
        self.name, self.layout = name, layout
        self.paths = {c: d / PARENT / name for c, d in layout.directories.items()}

    @classmethod
    def create(cls, name: str, limits: Limits) -> ControlGroup:
        layout = _layout()
        if isinstance(layout, str):
            raise OSError(layout)
        group = cls(name, layout)
        group.remove()  # a group of that name left by a platform that died: nothing of it may live on
        for _controller, path in group.paths.items():
            if layout.version == 2:
                _enable_v2(path.parent.parent, path.parent)
            path.mkdir(parents=True, exist_ok=True)
        group._limit(limits)
        return group

    def _limit(self, limits: Limits) -> None:
        quota = max(1_000, int(limits.cpus * _CPU_PERIOD_US))
        if self.layout.version == 2:
            path = self.paths["memory"]
            _write(path / "memory.max", limits.memory_bytes)
            with contextlib.suppress(FileNotFoundError):  # no swap configured: nothing to forbid
                _write(path / "memory.swap.max", 0)
            _write(path / "pids.max", limits.processes)
            _write(path / "cpu.max", f"{quota} {_CPU_PERIOD_US}")
            return
        memory = self.paths["memory"]
        _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
        with contextlib.suppress(FileNotFoundError):  # memory and swap together: no swap either
            _write(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes)
        _write(self.paths["pids"] / "pids.max", limits.processes)
        _write(self.paths["cpu"] / "cpu.cfs_period_us", _CPU_PERIOD_US)
        _write(self.paths["cpu"] / "cpu.cfs_quota_us", quota)

    def join(self) -> None:
        """Move the calling process into the group (a preexec_fn: what it execs and starts stays inside)."""
        for path in dict.fromkeys(self.paths.values()):
            _write(path / "cgroup.procs", os.getpid())

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                found |= {int(p) for p in (path / "cgroup.procs").read_text().split()}
        return found

    def kill(self, within: float = 10.0) -> None:
        """SIGKILL every process in the group, again until none is left (one may fork meanwhile)."""
        deadline = time.monotonic() + within
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def out_of_memory_kills(self) -> int:
        """How many processes the kernel killed for the memory limit."""
        path = self.paths["memory"]
        name = "memory.events" if self.layout.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def remove(self) -> None:
        self.kill()
        for path in self.paths.values():
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()


def _enable_v2(above: Path, parent: Path) -> None:
    """Controllers handed down to `parent` (PARENT) and from it to its groups. The platform's own group must be
    allowed to (it is the root group, or one delegated to it whose processes sit in a leaf)."""
    for directory in (above, parent):
        directory.mkdir(exist_ok=True)
        enabled = set((directory / "cgroup.subtree_control").read_text().split())
        for controller in CONTROLLERS:
            if controller not in enabled:
                _write(directory / "cgroup.subtree_control", f"+{controller}")


def _write(path: Path, value: object) -> None:
    with open(path, "w") as file:
        file.write(str(value))


# Disk ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bounded_directory(path: Path, size_bytes: int, files: int, uid: int | None) -> Iterator[Path]:
    """`path` as a tmpfs of at most `size_bytes` and `files` entries, owned by `uid` and closed to everyone else,
    for as long as the context lasts; then unmounted (what was written is gone) and removed. The bound is the
    kernel's (the writer gets ENOSPC), and what is written there counts towards the writer's memory limit too.
    Without root (`uid` None, the weaker mode), a plain directory closed to others."""
    if path.exists():  # left by a platform that died with it mounted
        unmount(path)
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    mounted = False
    try:
        if uid is not None:
            mount_tmpfs(path, size_bytes, files, uid)
            mounted = True
        yield path
    finally:
        if mounted:
            unmount(path)
            with contextlib.suppress(OSError):
                path.rmdir()
        else:
            shutil.rmtree(path, ignore_errors=True)  # fd-based: links in it are removed, never followed


def mount_tmpfs(path: Path, size_bytes: int, files: int, uid: int) -> None:
    """A tmpfs of at most `size_bytes` and `files` entries on `path`, owned by `uid` and closed to everyone else."""
    options = f"size={size_bytes},nr_inodes={files},mode=0700,uid={uid},gid={uid},nosuid,nodev"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "fin-behavior", str(path)], check=True, capture_output=True)


def unmount(path: Path | str) -> None:
    """Unmount `path` (lazily: a process still in it does not keep it); nothing when it is not mounted."""
    subprocess.run(["umount", "--lazy", str(path)], check=False, capture_output=True)
