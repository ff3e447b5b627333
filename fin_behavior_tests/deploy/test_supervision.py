"""The local endpoint survives faults, with real processes: a live color killed under load is restarted from
the same bundle, a crash loop stops after its limit and says so, a killed supervisor takes over again, and two
rollouts never interleave."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from fin_behavior.cli import main
from fin_behavior.deploy.endpoint_state import STATE_FILE, read_state
from fin_behavior.deploy.lock import RolloutInProgressError, exclusive_rollout
from fin_behavior.deploy.rollout import rollout
from fin_behavior.deploy.supervisor import Supervisor, process_alive, process_identity
from fin_behavior.settings import get_settings
from fin_behavior_tests.serving_fixtures import Load, gates, local_target, release, served_version


@pytest.fixture
def target(tmp_path, serving_env):
    local = local_target(tmp_path / "endpoint", max_restarts=2, restart_window_seconds=60)
    yield local
    local.stop_all()


def _wait(condition, seconds: float, step: float = 0.05) -> float:
    """Seconds until `condition()` held; fails the test past `seconds`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(step)
    return time.monotonic() - started


def _answers(target) -> bool:
    return target.answering() is not None


def test_a_killed_live_color_is_restarted_under_load_and_the_failures_are_bounded(target, bundle):
    rollout(target, release(bundle[0], "1"), gates())
    victim, private_port = target.live().detail["pid"], target.live().detail["port"]
    assert process_alive({"pid": victim})  # as a state file written before identities names it
    with Load(target, bundle[1][0]) as load:
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        # one read of the state per look: between two reads the color can be restarting (live() None)
        back = _wait(lambda: (live := target.live()) is not None and live.detail["pid"] != victim, 10)
        time.sleep(0.5)
    assert target.live().detail["port"] == private_port  # the supervisor's socket, inherited by the new process
    assert target.ready(target.live())
    failed = sum(load.failures.values())
    served = load.outcomes["v1"]
    print(f"\nkill -9 of the live color: serving again after {back:.2f} s; {failed} of {failed + served} failed")
    assert back < 10 and served > 100
    assert failed <= 6, load.failures  # at most the requests in flight on the 6 clients' connections
    assert not [k for k in load.failures if k.startswith("{")], load.failures  # broken connections, no 5xx
    assert served_version(target) == "1"
    state = target.status()
    assert len(state["colors"]["blue"]["restarts"]) == 1
    assert any("restarting it from the same bundle" in e["message"] for e in state["events"])
    assert any("serves again after" in e["message"] for e in state["events"])


def test_a_crash_loop_stops_after_its_limit_and_status_says_so(target, bundle, capsys, monkeypatch):
    rollout(target, release(bundle[0], "1"), gates())
    monkeypatch.setenv("FIN_BEHAVIOR_ENDPOINT_DIR", str(target.root))
    monkeypatch.setenv("FIN_BEHAVIOR_ENDPOINT_PORT", str(target.port))
    get_settings.cache_clear()
    keys = target.keys_file.read_text()
    target.keys_file.write_text("not json")  # every restart now exits at once (exit code 2, a clear error)
    os.kill(target.live().detail["pid"], signal.SIGKILL)
    _wait(lambda: target.state()["colors"]["blue"]["status"] == "crash-loop", 20)
    events = [e["message"] for e in target.state()["events"]]
    assert sum("restarting it from the same bundle" in e for e in events) == 2
    assert any("crash loop, not restarted" in e for e in events)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{target.url}/health", timeout=2)  # refused at once, not left hanging

    assert main(["endpoint", "status"]) == 1
    out = capsys.readouterr().out
    assert "crash-loop" in out and "crash loop, not restarted" in out and out.rstrip().endswith("NOT serving")

    target.keys_file.write_text(keys)
    rollout(target, release(bundle[0], "2"), gates())  # a new rollout brings the endpoint back
    assert served_version(target) == "2"


def test_a_killed_supervisor_is_no_single_point_of_failure(target, bundle):
    rollout(target, release(bundle[0], "1"), gates())
    os.kill(target.supervisor_pid(), signal.SIGKILL)
    _wait(lambda: target.supervisor_pid() is None, 5)
    with Load(target, bundle[1][0]) as load:  # the live color still holds the socket and serves
        _wait(lambda: load.outcomes["v1"] >= 20 or load.failures, 30)  # (a busy machine is slow to start clients)
    assert load.failures == {} and load.outcomes["v1"] >= 20

    target.ensure_supervisor()  # any later command starts a new one; it takes the live color over
    assert target.status()["supervisor_running"] and target.live().version == "1"
    victim = target.live().detail["pid"]
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: (live := target.live()) is not None and live.detail["pid"] != victim, 10)  # one read per look
    assert served_version(target) == "1"


def _hold(root, ready, release_it):
    with exclusive_rollout(root, "deploy job run r1: 3 of m", timeout=30):
        ready.set()
        release_it.wait(30)


def test_a_second_rollout_waits_or_is_refused_naming_the_first(tmp_path):
    ready, release_it = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(tmp_path, ready, release_it))
    holder.start()
    try:
        assert ready.wait(30)
        started = time.monotonic()
        with pytest.raises(RolloutInProgressError) as refused, exclusive_rollout(tmp_path, "rollback", timeout=0.5):
            pass
        assert time.monotonic() - started >= 0.5
        message = str(refused.value)
        assert "deploy job run r1: 3 of m" in message and f"pid {holder.pid}" in message
        assert "rollout_lock_timeout_seconds" in message and "Nothing was changed" in message

        release_it.set()  # the first one finishes: the second gets the endpoint
        with exclusive_rollout(tmp_path, "rollback", timeout=30):
            assert json.loads((tmp_path / "rollout.json").read_text())["what"] == "rollback"
    finally:
        release_it.set()
        holder.join(30)

    killed = multiprocessing.Process(target=_hold, args=(tmp_path, ready := multiprocessing.Event(), release_it))
    release_it.clear()
    killed.start()
    assert ready.wait(30)
    os.kill(killed.pid, signal.SIGKILL)  # a deployer that crashes holding the lock does not keep it
    killed.join(10)
    with exclusive_rollout(tmp_path, "after a crash", timeout=5):
        pass


def test_a_color_is_known_by_its_start_time_so_it_stays_alive_through_exec_and_a_recycled_pid_does_not_pass():
    # the command line of a process reads empty while it execs: a color checked then looked dead and was stopped
    process = subprocess.Popen(["sh", "-c", "read line; exec sleep 30"], stdin=subprocess.PIPE)
    try:
        entry = {"pid": process.pid, "identity": process_identity(process.pid)}
        cmdline = Path(f"/proc/{process.pid}/cmdline")
        before = cmdline.read_bytes()
        process.stdin.write(b"go\n")
        process.stdin.flush()
        during_exec = []  # checked on every step: the old command line, for a moment none (if caught), the new one
        while (now := cmdline.read_bytes()) in (before, b""):
            during_exec.append(process_alive(entry))
        assert b"sleep" in now and all(during_exec)
        assert process_alive(entry)  # another program now runs in it, and it is still the same process
        assert not process_alive(entry | {"identity": entry["identity"] + "0"})  # another process with that pid
        assert not process_alive(entry | {"identity": None})  # a process that was gone when it was recorded
        assert not process_alive({"pid": process.pid})  # from before identities: by its command line, not ours
    finally:
        process.kill()
    _wait(lambda: process_identity(process.pid) is None, 10)  # a zombie is not alive (it is not reaped yet)
    assert not process_alive(entry)
    process.wait()
    assert not process_alive(entry)


def test_the_state_file_has_one_reader_that_fills_an_older_file_and_a_command_names_only_known_statuses(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"live": "blue", "colors": {"blue": {"version": "3"}}}))
    state = read_state(tmp_path, "http://127.0.0.1:1")  # written before events and history were kept
    assert state["history"] == [] and state["events"] == [] and state["colors"]["blue"]["version"] == "3"
    assert read_state(tmp_path / "none", "http://127.0.0.1:1")["live"] is None
    with pytest.raises(ValueError, match="unknown color status 'alive'"):
        Supervisor(tmp_path, "127.0.0.1", 1, 1.0, 1, 1.0).command("mark blue alive", [])
