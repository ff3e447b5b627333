"""Running code the platform did not write (a submitted script, its model's verification and serving) confined,
with bubblewrap (`bwrap`, Debian's `bubblewrap`: the sandbox of Flatpak, small and well reviewed) rather than
namespace code of our own. The command sees a root filesystem of the system's programs and libraries, the
project's package and the paths the caller names, and nothing else of the machine (no platform state, data,
artifacts, keys, or another model name's files); a /tmp and /dev/shm of its own, each a tmpfs of bounded size;
no network; its own process, IPC (System V and POSIX message queues and shared memory end with it), UTS and
cgroup namespaces; no controlling terminal; no new user namespace and none of the kernel interfaces with a record
of privilege escalations (a seccomp filter); and it dies with the process the platform started.

As root, bwrap builds the namespaces and mounts as root, then the command runs as an unprivileged user id the
caller chooses, with no capability now or after an exec and no setuid gain (setpriv). As any other user (a
service account), bwrap runs in a user namespace of its own as that same user, with every capability dropped;
the kernel must allow unprivileged user namespaces. Where the sandbox cannot be made, `unavailable()` says why:
callers refuse rather than run the code unconfined. The user id has a name inside (its own /etc/passwd line),
so `getpwuid` answers as for any account.

Memory, processes, CPU and disk are bounded by the kernel too, around this: fin_behavior/bounds.py."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

PROJECT_PACKAGE = Path(__file__).resolve().parent  # the environments import it through a .pth file
SYSTEM = ("/usr", "/etc")  # programs, libraries, certificates, locales; /etc/shadow stays root's (mode 0640)
HOSTNAME = "fin-behavior-sandbox"
DEFAULT_TMP_BYTES = 256 << 20  # each of /tmp and /dev/shm
USER_NAME = "sandbox"


# Where the system's own tools are found: never the PATH a caller passes on, which leads with an environment's
# bin/ (a package's `bwrap` or `setpriv` there would run as root, outside the sandbox or with its capabilities).
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _tool(name: str) -> str | None:
    return shutil.which(name, path=SYSTEM_PATH)


def as_user(uid: int) -> list[str]:
    """The prefix that runs a command as user and group `uid`, with no supplementary groups (no account needed)."""
    return [_tool("setpriv") or "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


def plain_environment(bin_dir: Path, home: Path, **more: str) -> dict[str, str]:
    """The variables a confined command is given: its environment's bin/ first on its PATH, a HOME of its own,
    `more`; nothing of the platform's (keys, credentials)."""
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **more}


def confined(
    command: Sequence[str],
    uid: int,
    cwd: Path,
    read_only: Sequence[Path] = (),
    writable: Sequence[Path] = (),
    network: bool = False,
    tmp_bytes: int = DEFAULT_TMP_BYTES,
    environment: dict[str, str] | None = None,
) -> list[str]:
    """`command`, run from `cwd` (one of the paths shown), seeing only the system, the project's package,
    `read_only` and `writable` (each at its own path); as user `uid` when the platform is root, else as the
    platform's user with no capabilities; as the first process of a process namespace of its own, so it cannot
    see or signal anything else, and when it ends every process it started ends too. The returned command's
    process stays outside the sandbox, passes SIGTERM, SIGHUP and SIGINT on to `command` (a supervisor's graceful
    stop), ends with its exit status, and takes it down with it if killed. Arguments appended to the returned
    command reach `command`; so do the file descriptors it inherits. `command` sees `environment`'s variables
    only, or, without one, those the returned command is started with (a caller's clean environment)."""
    spec = {
        "uid": uid,
        "cwd": str(cwd),
        "read_only": [str(p) for p in (*SYSTEM, PROJECT_PACKAGE, *read_only)],
        "writable": [str(p) for p in writable],
        "network": network,
        "tmp_bytes": tmp_bytes,
        "libraries": _PYSECCOMP,  # where the launcher finds pyseccomp, whichever interpreter runs it
        "bwrap": _tool("bwrap") or "/usr/bin/bwrap",  # the one the platform judged (`unavailable`)
        "environment": environment,
    }
    return [sys.executable, "-I", str(PROJECT_PACKAGE / "confinement.py"), json.dumps(spec), *command]


def environment_paths(python: Path) -> list[Path]:
    """What running a built environment's `python` needs shown: the environment and the interpreter it is made
    from (its installation prefix; usually under /usr, which is shown anyway)."""
    interpreter = Path(os.path.realpath(python)).parent.parent
    shown = any(interpreter.is_relative_to(system) for system in SYSTEM)
    return [Path(python).parent.parent, *([] if shown else [interpreter])]


@functools.cache
def unavailable() -> str | None:
    """Why this machine cannot confine code (no bubblewrap, a container without CAP_SYS_ADMIN, a kernel that
    refuses unprivileged user namespaces), from one confined `true`; None when it can."""
    if _tool("bwrap") is None:
        return f"bubblewrap is not installed (no `bwrap` in {SYSTEM_PATH})"
    probe = subprocess.run(confined(["true"], 65534, Path("/")), capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["no reason given"])[-1]


def how_to_allow() -> str:
    """What an operator changes so that `unavailable()` is None."""
    if _tool("bwrap") is None:
        return "Install bubblewrap (apt-get install bubblewrap)."
    if os.geteuid() == 0:
        return (
            "Run the platform where it may create namespaces (on the host, or in a container started with "
            "--cap-add SYS_ADMIN)."
        )
    return (
        "Allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, and on Ubuntu "
        "kernel.apparmor_restrict_unprivileged_userns=0), or run the platform as root."
    )


# The launcher: the process the platform starts (the standard library and pyseccomp) -----------------------------


def _identity_files(uid: int) -> tuple[int, int]:
    """In-memory /etc/passwd and /etc/group for the sandbox: the machine's, plus a name for `uid`."""
    files = []
    for path, line in (
        ("/etc/passwd", f"{USER_NAME}:x:{uid}:{uid}:confined code:/nonexistent:/usr/sbin/nologin\n"),
        ("/etc/group", f"{USER_NAME}:x:{uid}:\n"),
    ):
        known = Path(path).read_text() if Path(path).exists() else ""
        ids = {entry.split(":")[2] for entry in known.splitlines() if entry.count(":") >= 3}
        fd = os.memfd_create(Path(path).name, 0)  # inheritable: bwrap reads it
        os.write(fd, (known if known.endswith("\n") or not known else known + "\n").encode())
        if str(uid) not in ids:
            os.write(fd, line.encode())
        os.lseek(fd, 0, os.SEEK_SET)
        files.append(fd)
    return files[0], files[1]


_found = importlib.util.find_spec("pyseccomp")
_PYSECCOMP = str(Path(_found.origin).parent) if _found and _found.origin else ""
_CLONE_NEWUSER = 0x10000000
_REFUSED_CALLS = ("keyctl", "add_key", "request_key", "bpf", "userfaultfd", "perf_event_open")


def _syscall_filter() -> int:
    """A seccomp filter (compiled by libseccomp, in memory) for everything in the sandbox: no new user namespace
    (unshare or clone with CLONE_NEWUSER; clone3, whose flags a filter cannot read, answers ENOSYS so the C
    library falls back to clone), and none of the kernel interfaces that sandboxes refuse for their record of
    privilege escalations (keyrings, eBPF, userfaultfd, perf events). Everything else is allowed."""
    import errno

    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    new_user = seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_NEWUSER, _CLONE_NEWUSER)  # the flags argument
    for call in ("unshare", "clone"):
        rules.add_rule(seccomp.ERRNO(errno.EPERM), call, new_user)
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for call in _REFUSED_CALLS:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), call)
    fd = os.memfd_create("fin-behavior-seccomp", 0)  # inheritable: bwrap reads it
    with os.fdopen(os.dup(fd), "wb") as out:
        rules.export_bpf(out)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _bwrap(spec: dict, command: list[str], status_fd: int, environment: dict[str, str]) -> list[str]:
    uid, as_root = spec["uid"], os.geteuid() == 0
    namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not spec["network"]:
        namespaces.append("--unshare-net")
    if not as_root:  # a user namespace of its own, in which the platform's user may mount; nothing kept
        namespaces += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    namespaces += ["--clearenv", *(part for name, value in environment.items() for part in ("--setenv", name, value))]
    passwd, group = _identity_files(uid if as_root else os.getuid())
    # bwrap's own init is the namespace's first process: it dies with bwrap (--die-with-parent), and with it
    # everything inside, whatever user ids they changed to (a command that is the first process itself and
    # changed its user id loses that parent-death signal)
    argv = [
        spec["bwrap"],
        *namespaces,
        "--die-with-parent",
        "--new-session",
        "--hostname",
        HOSTNAME,
    ]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged /usr: links into /usr
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    size = str(spec["tmp_bytes"])
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for scratch in ("/tmp", "/dev/shm"):  # each a tmpfs of its own size, open to all like the machine's
        argv += ["--perms", "1777", "--size", size, "--tmpfs", scratch]
    shown = [(p, "--ro-bind") for p in spec["read_only"]] + [(p, "--bind") for p in spec["writable"]]
    made: set[str] = set()
    for path, how in sorted(shown, key=lambda item: len(Path(item[0]).parts)):  # a path inside another: after it
        for parent in reversed(Path(path).parents[:-1]):  # the way to it, where bwrap must make it: open to all
            if str(parent) not in made:
                made.add(str(parent))
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += [how, path, path]
    for fd, path in ((passwd, "/etc/passwd"), (group, "/etc/group")):  # readable by all, as the machine's are
        argv += ["--perms", "0644", "--ro-bind-data", str(fd), path]
    argv += ["--seccomp", str(_syscall_filter()), "--chdir", spec["cwd"], "--json-status-fd", str(status_fd), "--"]
    if as_root:  # no capability now or after an exec, no setuid gain
        argv += [*as_user(uid)[:-1], "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--"]
    return argv + command


def _signal_children(init: int, signum: int) -> None:
    """Send `signum` to the command (and any orphan the init adopted): bwrap's init does not pass signals on."""
    try:
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    except OSError:
        return
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signum)


def main() -> None:
    """`python fin_behavior/confinement.py SPEC COMMAND...`: COMMAND in bubblewrap's sandbox as SPEC says, as
    the first process of its own process namespace. SIGTERM, SIGHUP and SIGINT sent here are passed on to it
    (whatever they were set to on entry); this ends with its status (128 + the signal when one ended it), and
    if this is killed, COMMAND is too (bwrap's --die-with-parent)."""
    spec, command = json.loads(sys.argv[1]), sys.argv[2:]
    given = dict(os.environ)
    # this process's own lookups (pyseccomp's library search may start gcc or ld) on the system's PATH, never the
    # command's, which leads with its environment's bin/; and nothing of the platform's environment passed on
    os.environ.clear()
    os.environ["PATH"] = SYSTEM_PATH
    environment = given if spec.get("environment") is None else spec["environment"]
    if spec["libraries"]:
        sys.path.append(spec["libraries"])
    read_status, write_status = os.pipe()
    os.set_inheritable(write_status, True)
    init: list[int] = []  # the sandbox's first process (bwrap's init), as seen from here, once bwrap has said
    pending: list[int] = []

    def pass_on(signum: int, _frame: object) -> None:
        if init:
            _signal_children(init[0], signum)
        else:
            pending.append(signum)

    for passed in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(passed, pass_on)
    # the sockets go through
    sandbox = subprocess.Popen(_bwrap(spec, command, write_status, environment), close_fds=False)
    os.close(write_status)

    def read_child_pid() -> None:
        with os.fdopen(read_status, "rb") as status:
            for line in status:
                try:
                    found = json.loads(line).get("child-pid")
                except ValueError:
                    continue
                if found:
                    init.append(int(found))
                    for signum in pending:
                        _signal_children(init[0], signum)
                    pending.clear()

    threading.Thread(target=read_child_pid, daemon=True).start()
    status = sandbox.wait()
    sys.exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
