"""Running code the platform did not write (a submitted script, its model's verification and serving) confined:
in a mount namespace whose root filesystem shows the system's programs and libraries, the project's package
and the paths the caller names, and nothing else of the machine (no platform state, data, artifacts, keys, or
another model name's files), with a /tmp and /dev/shm of its own; with no network; in a process namespace of
its own (it sees and can signal only its own processes, and all of them die with it). Built from
util-linux's `unshare`, `mount` and `setpriv` (present on any Debian), the way bubblewrap and container
runtimes do it: private mounts, bind mounts, a change of root, capabilities dropped before the command runs.

As root, the command runs as an unprivileged user id the caller chooses. As any other user (a service
account), in a user namespace of its own as that same user, with no capabilities (it cannot undo a mount, make
a read-only path writable or leave its root); the kernel must allow unprivileged user namespaces. Where the
namespaces cannot be made, `unavailable()` says why: callers refuse rather than run the code unconfined."""

from __future__ import annotations

import functools
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PROJECT_PACKAGE = Path(__file__).resolve().parent  # the environments import it through a .pth file
SYSTEM = ("/usr", "/etc")  # programs, libraries, certificates, locales; /etc/shadow stays root's (mode 0640)
# The new root is a fresh tmpfs mounted, inside the private mount namespace only, on an empty directory the
# platform makes as root, or else on the first of these that exists and holds nothing the command is shown.
NEW_ROOT = Path("/run/fin-behavior-sandbox")
_OTHER_MOUNT_POINTS = ("/mnt", "/media", "/srv", "/opt", "/boot")
# what the command runs under when it is not root: no capability, now or after an exec, no setuid gain
_NO_CAPABILITIES = ["setpriv", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]


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
) -> list[str]:
    """`command`, run from `cwd` (one of the paths shown), seeing only the system, the project's package,
    `read_only` and `writable` (each at its own path); as user `uid` when the platform is root, else as the
    platform's user with no capabilities; as the first process of a process namespace of its own, so it cannot
    see or signal anything else, and when it ends every process it started ends too. The returned command's
    process stays outside that namespace, passes SIGTERM and SIGHUP on to `command` (a supervisor's
    graceful stop), ends with its exit status, and takes it down with it if killed. Arguments appended to the
    returned command reach `command`."""
    shown = [(Path(p), True) for p in (*SYSTEM, PROJECT_PACKAGE, *read_only)] + [(Path(p), False) for p in writable]
    mount_point = _mount_point([path for path, _ in shown] + [Path(cwd)])
    root = shlex.quote(str(mount_point))
    steps = ["set -e", f"mount -t tmpfs -o mode=0755 fin-behavior-sandbox {root}"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged /usr: links into /usr
        if os.path.islink(top):
            steps.append(f"ln -s {shlex.quote(os.readlink(top))} {root}{top}")
        elif os.path.isdir(top):
            steps += _bind(root, Path(top), read_only=True)
    steps += [
        f"mkdir -p {root}/tmp {root}/dev/shm {root}/proc",
        f"mount -t tmpfs -o mode=1777 tmp {root}/tmp",
        f"mount -t tmpfs -o mode=1777 shm {root}/dev/shm",
    ]
    for device in ("null", "zero", "full", "random", "urandom"):
        steps += [f"touch {root}/dev/{device}", f"mount --bind /dev/{device} {root}/dev/{device}"]
    steps.append(f"ln -s /proc/self/fd {root}/dev/fd")
    for path, ro in sorted(shown, key=lambda item: len(item[0].parts)):  # a path inside another (/tmp too): after it
        steps += _bind(root, path, read_only=ro)
    as_root = os.geteuid() == 0
    drop = [*as_user(uid)[:-1], "--no-new-privs"] if as_root else _NO_CAPABILITIES
    steps += [f"mount -t proc proc {root}/proc", 'exec "$@"']  # a /proc of its namespace; then no way back
    first = [  # the namespace's first process (a namespace ends with its first)
        "sh", "-c", "\n".join(steps), "fin-behavior-sandbox",
        "unshare", f"--root={mount_point}", f"--wd={cwd}", *drop, "--pdeathsig=KILL", "--", *command,
    ]  # fmt: skip
    namespaces = ["--mount", "--pid", *([] if network else ["--net"])]
    if not as_root:  # a user namespace of its own, in which the platform's user may mount
        namespaces = ["--user", "--map-root-user", *namespaces]
    # the process the platform starts: outside the new process namespace, it forks `first` into it
    return ["unshare", *namespaces, sys.executable, "-I", str(PROJECT_PACKAGE / "confinement.py"), *first]


def environment_paths(python: Path) -> list[Path]:
    """What running a built environment's `python` needs shown: the environment and the interpreter it is made
    from (its installation prefix; usually under /usr, which is shown anyway)."""
    interpreter = Path(os.path.realpath(python)).parent.parent
    shown = any(interpreter.is_relative_to(system) for system in SYSTEM)
    return [Path(python).parent.parent, *([] if shown else [interpreter])]


@functools.cache
def unavailable() -> str | None:
    """Why this machine cannot confine code (a container without CAP_SYS_ADMIN, a kernel that refuses
    unprivileged user namespaces), from one confined `true`; None when it can."""
    try:
        command = confined(["true"], 65534, Path("/"))
    except RuntimeError as exc:
        return str(exc)
    probe = subprocess.run(command, capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["no reason given"])[-1]


def how_to_allow() -> str:
    """What an operator changes so that `unavailable()` is None."""
    if os.geteuid() == 0:
        return (
            "Run the platform where it may create namespaces (on the host, or in a container started with "
            "--cap-add SYS_ADMIN)."
        )
    return (
        "Allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, and on Ubuntu "
        "kernel.apparmor_restrict_unprivileged_userns=0), or run the platform as root."
    )


def _mount_point(shown: list[Path]) -> Path:
    if os.geteuid() == 0:
        NEW_ROOT.mkdir(parents=True, exist_ok=True)
        return NEW_ROOT
    for candidate in map(Path, _OTHER_MOUNT_POINTS):
        if candidate.is_dir() and not any(path.is_relative_to(candidate) for path in shown):
            return candidate
    raise RuntimeError(f"none of {', '.join(_OTHER_MOUNT_POINTS)} can hold the confined command's root")


def _bind(root: str, path: Path, read_only: bool) -> list[str]:
    target = shlex.quote(f"{root}{path}")
    source = shlex.quote(str(path))
    parent = shlex.quote(f"{root}{path.parent}")
    made = f"mkdir -p {target}" if path.is_dir() else f"mkdir -p {parent}; touch {target}"  # a mount point
    steps = [made, f"mount --rbind {source} {target}"]
    if read_only:
        steps.append(f"mount -o remount,bind,ro {target}")
    return steps


def main() -> None:
    """`python fin_behavior/confinement.py COMMAND...` (standard library only), started by `unshare --pid`:
    COMMAND, its only child, is the first process of the new process namespace. SIGTERM, SIGHUP and SIGINT
    sent here are passed on to it (whatever they were set to on entry: a shell cannot undo an ignored signal,
    Python can); this ends with its status (128 + the signal when one ended it), and if this is killed,
    COMMAND is too (its parent-death signal)."""
    started: list[subprocess.Popen] = []
    pending: list[int] = []

    def pass_on(signum: int, _frame: object) -> None:
        if started:
            started[0].send_signal(signum)
        else:
            pending.append(signum)

    for passed in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(passed, pass_on)
    started.append(subprocess.Popen(sys.argv[1:], close_fds=False))  # the supervisor's sockets go through
    for signum in pending:
        started[0].send_signal(signum)
    status = started[0].wait()
    sys.exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
