"""Running code the platform did not write (a submitted script, its model's verification and serving) confined,
when the platform runs as root: as an unprivileged user id, in a mount namespace whose root filesystem shows the
system's programs and libraries, the project's package and the paths the caller names, and nothing else of the
machine (no platform state, data, artifacts, keys, or another model name's files), with a /tmp and /dev/shm of
its own; optionally in a process namespace of its own (it sees and can signal only its own processes, and all of
them die with it) and with no network. Built from util-linux's `unshare`, `mount` and `setpriv` (present on any
Debian), the way bubblewrap and container runtimes do it: private mounts, bind mounts, a change of root.

Not root: the command runs as it is (nothing here can be arranged without privileges); the README says so."""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

PROJECT_PACKAGE = Path(__file__).resolve().parent  # the environments import it through a .pth file
SYSTEM = ("/usr", "/etc")  # programs, libraries, certificates, locales; /etc/shadow stays root's (mode 0640)
# The new root is a fresh tmpfs mounted here, inside the private mount namespace only (the directory itself is
# an empty one on the host, made once; nothing is ever written to it there).
NEW_ROOT = Path("/run/fin-behavior-sandbox")


def as_user(uid: int) -> list[str]:
    """The prefix that runs a command as user and group `uid`, with no supplementary groups (no account needed)."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def confined(
    command: Sequence[str],
    uid: int,
    cwd: Path,
    read_only: Sequence[Path] = (),
    writable: Sequence[Path] = (),
    network: bool = False,
    own_processes: bool = False,
) -> list[str]:
    """`command`, run from `cwd` (one of the paths shown), as user `uid` seeing only the system, the project's
    package, `read_only` and `writable` (each at its own path). `own_processes`: a process namespace of its own,
    whose first process the command is: it cannot see or signal anything else, and when it ends (or is killed)
    every process it started ends too. Without it, signals sent to the returned command's pid reach the command
    itself (every step execs), as a supervisor needs."""
    if os.geteuid() != 0:
        return list(command)
    NEW_ROOT.mkdir(parents=True, exist_ok=True)
    root = shlex.quote(str(NEW_ROOT))
    steps = ["set -e", f"mount -t tmpfs -o mode=0755 fin-behavior-sandbox {root}"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged /usr: links into /usr
        if os.path.islink(top):
            steps.append(f"ln -s {shlex.quote(os.readlink(top))} {root}{top}")
        elif os.path.isdir(top):
            steps += _bind(Path(top), read_only=True)
    steps += [
        f"mkdir -p {root}/tmp {root}/dev/shm {root}/proc",
        f"mount -t tmpfs -o mode=1777 tmp {root}/tmp",
        f"mount -t tmpfs -o mode=1777 shm {root}/dev/shm",
        # a fresh /proc shows the new process namespace; without one, the machine's (pids only: other users'
        # environments and open files stay closed to this user id)
        f"mount -t proc proc {root}/proc" if own_processes else f"mount --rbind /proc {root}/proc",
    ]
    for device in ("null", "zero", "full", "random", "urandom"):
        steps += [f"touch {root}/dev/{device}", f"mount --bind /dev/{device} {root}/dev/{device}"]
    steps.append(f"ln -s /proc/self/fd {root}/dev/fd")
    shown = [(Path(p), True) for p in (*SYSTEM, PROJECT_PACKAGE, *read_only)] + [(Path(p), False) for p in writable]
    for path, ro in sorted(shown, key=lambda item: len(item[0].parts)):  # a path inside another (/tmp too): after it
        steps += _bind(path, read_only=ro)
    inner = ["unshare", f"--root={NEW_ROOT}", f"--wd={cwd}", *as_user(uid), *command]
    steps.append(f'exec {shlex.join(inner)} "$@"')  # arguments appended to the returned command reach `command`
    namespaces = ["--mount", *([] if network else ["--net"])]
    if own_processes:
        namespaces += ["--pid", "--fork", "--kill-child"]
    return ["unshare", *namespaces, "sh", "-c", "\n".join(steps), "fin-behavior-sandbox"]


def environment_paths(python: Path) -> list[Path]:
    """What running a built environment's `python` needs shown: the environment and the interpreter it is made
    from (its installation prefix; usually under /usr, which is shown anyway)."""
    interpreter = Path(os.path.realpath(python)).parent.parent
    shown = any(interpreter.is_relative_to(system) for system in SYSTEM)
    return [Path(python).parent.parent, *([] if shown else [interpreter])]


@functools.cache
def unavailable() -> str | None:
    """Why this machine cannot confine code although the platform runs as root (a container without
    CAP_SYS_ADMIN, say), from one confined `true`; None when it can, or when the platform is not root."""
    if os.geteuid() != 0:
        return None
    probe = subprocess.run(confined(["true"], 65534, Path("/")), capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["no reason given"])[-1]


def _bind(path: Path, read_only: bool) -> list[str]:
    target = shlex.quote(f"{NEW_ROOT}{path}")
    source = shlex.quote(str(path))
    parent = shlex.quote(f"{NEW_ROOT}{path.parent}")
    made = f"mkdir -p {target}" if path.is_dir() else f"mkdir -p {parent}; touch {target}"  # a mount point
    steps = [made, f"mount --rbind {source} {target}"]
    if read_only:
        steps.append(f"mount -o remount,bind,ro {target}")
    return steps
