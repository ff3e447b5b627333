"""Confinement as a platform that is not root would do it (a service account): a user namespace of its own, the
machine's files hidden, no capability left. These tests run as root, so they run the platform's side as the
unprivileged user `nobody`; the root side is tested through the submissions (submissions/test_sandbox.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pyseccomp
import pytest

from fin_behavior.confinement import PROJECT_PACKAGE, as_user, confined
from fin_behavior_tests.helpers import running_with

NOBODY = 65534
PROBE = """
import json, os, socket, subprocess
found = {"uid": os.getuid(), "capabilities": open("/proc/self/status").read().split("CapEff:")[1].split()[0]}
for name, path in [("hidden", HIDDEN), ("shown", SHOWN)]:
    try:
        found[name] = open(path).read()
    except OSError as exc:
        found[name] = type(exc).__name__
remount = subprocess.run(["mount", "-o", "remount,bind,rw", os.path.dirname(SHOWN)], capture_output=True)
found["remount"] = remount.returncode
try:
    open(SHOWN, "a").write("changed")
    found["write shown"] = "written"
except OSError as exc:
    found["write shown"] = type(exc).__name__
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3)
    found["network"] = "reached"
except OSError as exc:
    found["network"] = type(exc).__name__
found["processes"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
open("found.json", "w").write(json.dumps(found))
"""


@pytest.fixture
def machine():
    """A directory `nobody` may read (pytest's own are closed to others): a file it must not see, a directory
    it is shown read-only, and its working directory."""
    base = Path(tempfile.mkdtemp(prefix="fin-behavior-confinement-"))
    base.chmod(0o755)
    (base / "secret.txt").write_text("the platform's data, readable by every user")
    (base / "secret.txt").chmod(0o644)
    (base / "shown").mkdir(mode=0o755)
    (base / "shown" / "model.txt").write_text("a bundle")
    os.chown(base / "shown" / "model.txt", NOBODY, NOBODY)  # its own file: only the mount keeps it unchanged
    (base / "work").mkdir()
    os.chown(base / "work", NOBODY, NOBODY)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the platform's side as `nobody`, which needs root to arrange")
def test_a_platform_that_is_not_root_confines_in_a_user_namespace_with_no_capability_left(machine):
    listening = socket.create_server(("127.0.0.1", 0))  # a service of the machine it must not reach
    probe = PROBE.replace("HIDDEN", repr(str(machine / "secret.txt")))
    probe = probe.replace("SHOWN", repr(str(machine / "shown" / "model.txt")))
    probe = probe.replace("PORT", str(listening.getsockname()[1]))
    work, shown = str(machine / "work"), str(machine / "shown")
    platform = (  # what the platform, running as `nobody`, runs: the probe, confined
        "import subprocess, sys\n"
        "from pathlib import Path\n"
        f"sys.path[:0] = [{str(PROJECT_PACKAGE.parent)!r}, {str(Path(pyseccomp.__file__).parent)!r}]\n"  # its packages
        "from fin_behavior.confinement import confined, unavailable\n"
        "assert unavailable() is None, unavailable()\n"
        f"command = confined(['/usr/bin/python3', '-c', {probe!r}], 0, Path({work!r}),\n"
        f"                   read_only=[Path({shown!r})], writable=[Path({work!r})])\n"
        "sys.exit(subprocess.run(command).returncode)\n"
    )
    with listening:
        done = subprocess.run(
            [*as_user(NOBODY), "/usr/bin/python3", "-c", platform], capture_output=True, text=True, timeout=60, cwd="/"
        )
    assert done.returncode == 0, done.stderr
    found = json.loads((machine / "work" / "found.json").read_text())
    assert found["hidden"] == "FileNotFoundError" and found["shown"] == "a bundle"
    assert found["capabilities"] == "0000000000000000"  # so no mount can be undone and no root left
    assert found["remount"] != 0 and found["write shown"] == "OSError"  # read-only (EROFS), though its own file
    assert (machine / "shown" / "model.txt").read_text() == "a bundle"
    assert found["network"] != "reached" and found["processes"] == [1, 2]  # the sandbox's init and itself
    assert (machine / "work" / "found.json").stat().st_uid == NOBODY  # written as the platform's own user


@pytest.mark.skipif(os.geteuid() != 0, reason="confines as root here; the non-root mode is the test above")
def test_a_supervisor_s_sigterm_reaches_the_confined_command_and_a_kill_takes_it_all_down(machine):
    marker = f"confined-{uuid.uuid4().hex}"
    command = [  # a service that drains on SIGTERM, with a child of its own
        "/usr/bin/python3", "-c",
        "import signal, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]])\n"
        "signal.signal(signal.SIGTERM, lambda *_: (open('drained', 'w').write('yes'), sys.exit(0)))\n"
        "open('ready', 'w').write('yes')\n"
        "time.sleep(600)\n",
        marker,
    ]  # fmt: skip
    work = machine / "work"

    def ignore_sigterm() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    for stop, status in ((signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)):
        (work / "ready").unlink(missing_ok=True)
        service = subprocess.Popen(
            confined(command, NOBODY, work, writable=[work]),
            start_new_session=True,
            preexec_fn=ignore_sigterm,  # as under a parent that ignores it: the signal must reach the command still
        )
        deadline = time.monotonic() + 30
        while not (work / "ready").exists():
            assert service.poll() is None and time.monotonic() < deadline, "the confined command did not start"
            time.sleep(0.05)
        os.kill(service.pid, stop)  # what the supervisor does: to the pid it started
        assert service.wait(timeout=30) == status
        assert not running_with(marker)  # nothing it started outlives it
    assert (work / "drained").read_text() == "yes"  # the SIGTERM reached it: it drained and exited 0


@pytest.mark.parametrize("as_root", [True, False], ids=["root platform", "service account"])
def test_confined_code_makes_no_user_namespace_and_reaches_no_risky_kernel_interface(machine, as_root):
    probe = (
        "import ctypes, json, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "found = {'unshare -Ur': subprocess.run(['unshare', '-Ur', 'true'], capture_output=True).returncode}\n"
        "found['keyctl'] = libc.syscall(250, 0, 0, 0, 0, 0) == -1 and ctypes.get_errno()  # KEYCTL_GET_KEYRING_ID\n"
        "found['bpf'] = libc.syscall(321, 0, 0, 0) == -1 and ctypes.get_errno()\n"
        "found['threads'] = subprocess.run(['python3', '-c', 'import threading; t = threading.Thread(target=print);"
        " t.start(); t.join()'], capture_output=True).returncode\n"
        "print(json.dumps(found))\n"
    )
    work = machine / "work"
    command = confined(["/usr/bin/python3", "-c", probe], NOBODY, work, writable=[work])
    run = command if as_root else [*as_user(NOBODY), *command]
    done = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["unshare -Ur"] != 0 and found["keyctl"] == found["bpf"] == 1  # EPERM
    assert found["threads"] == 0  # ordinary processes and threads are made as ever


def test_the_confined_command_sees_only_the_variables_it_is_given(machine, monkeypatch):
    """A served model runs with the supervisor's environment around it (keys, credentials): none of it passes in."""
    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSION_KEY", "the platform's key")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "the platform's credential")
    given = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    shown = subprocess.run(
        confined(["/usr/bin/env"], NOBODY, machine / "work", writable=[machine / "work"], environment=given),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    seen = dict(line.split("=", 1) for line in shown.stdout.splitlines())
    assert seen.pop("PWD") == str(machine / "work") and seen == given  # PWD: bwrap's, where it started it
