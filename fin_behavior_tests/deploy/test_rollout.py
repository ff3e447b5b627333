"""Blue/green on the local target with real service processes: gates, rollback at each step, no failed
client request under load, state that outlives the deployer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from pathlib import Path

import httpx
import pytest

from fin_behavior.cli import main
from fin_behavior.deploy.local import LocalTarget, process_alive
from fin_behavior.deploy.rollout import Release, RolloutError, rollout
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import ENVS
from fin_behavior_tests.serving_fixtures import Load, gates, local_target, release, served_version


@pytest.fixture
def target(tmp_path, serving_env):
    local = local_target(tmp_path / "endpoint")
    yield local
    local.stop_all()


def test_rollouts_and_a_rollback_under_load_fail_no_request(target, bundle, tmp_path):
    first = rollout(target, release(bundle[0], "1"), gates())
    assert first.replaced is None and first.new.color == "blue"
    assert all(outcome.passed for outcome in first.gates.values())
    assert served_version(target) == "1"

    broken = release(bundle[0], "3")
    broken = Release("m", "3", broken.bundle, broken.info, broken.expected | {"probabilities": [0.5] * 200})
    with Load(target, bundle[1][0]) as load:
        second = rollout(target, release(bundle[0], "2"), gates())
        with pytest.raises(RolloutError, match="parity"):
            rollout(target, broken, gates())
        third = rollout(target, release(bundle[0], "4"), gates())
    assert load.failures == {}, load.failures
    assert load.outcomes["v1"] and load.outcomes["v2"] and load.outcomes["v4"] and not load.outcomes["v3"]
    assert second.new.color == "green" and second.replaced.version == "1"
    assert third.new.color == "blue" and third.replaced.version == "2"
    assert served_version(target) == "4"
    assert not process_alive(second.new.detail)  # drained and stopped after the next success


def _tampered(bundle_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tampered"
    shutil.copytree(bundle_dir, copy)
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes()[:-10])
    return copy


class CrashingTarget(LocalTarget):
    """The new color dies right after it starts accepting: the switch must be undone."""

    def switch(self, new, old):
        super().switch(new, old)
        os.kill(new.detail["pid"], signal.SIGKILL)


@pytest.mark.parametrize("failure", ["not ready", "smoke", "parity", "latency", "crash during switch"])
def test_each_failure_rolls_back_and_the_old_version_keeps_serving(failure, target, bundle, tmp_path):
    rollout(target, release(bundle[0], "1"), gates())
    new, chosen = release(bundle[0], "2"), gates()
    if failure == "not ready":
        new = release(_tampered(bundle[0], tmp_path), "2")
    elif failure == "smoke":
        new = Release("m", "2", new.bundle, new.info, new.expected | {"records": [{"age": "x"}]})
    elif failure == "parity":
        new = Release("m", "2", new.bundle, new.info, new.expected | {"probabilities": [0.0] * 200})
    elif failure == "latency":
        chosen = gates(max_latency_ms=0.001, latency_requests=5)
    elif failure == "crash during switch":
        target = CrashingTarget(target.root, ENVS, target.settings)
    with pytest.raises(RolloutError) as raised:
        rollout(target, new, chosen)
    expected_reason = {
        "not ready": "does not match model_info.json",
        "smoke": "smoke",
        "parity": "parity",
        "latency": "latency",
        "crash during switch": "stopped being ready",
    }[failure]
    assert expected_reason in str(raised.value)
    assert "v2" in raised.value.reason
    assert "serving model version 2" in raised.value.log_tail  # the new color's log comes with the failure
    assert served_version(target) == "1"
    state = target.state()
    assert state["live"] == "blue" and state["colors"]["green"]["status"] == "failed"
    assert not process_alive(state["colors"]["green"])


def test_state_keys_and_a_kept_color_outlive_the_deployer(target, bundle):
    rollout(target, release(bundle[0], "1"), gates())
    rollout(target, release(bundle[0], "2"), gates(), keep_old=True)

    again = LocalTarget(target.root, ENVS, target.settings)  # a later Dagster run, another process
    live = again.live()
    assert live is not None and (live.color, live.version) == ("green", "2")
    state = again.status()
    assert state["colors"]["blue"]["status"] == "idle" and state["colors"]["blue"]["running"]
    kept = httpx.get(f"http://127.0.0.1:{state['colors']['blue']['port']}/ready").json()
    assert kept["model_version"] == "1"  # still answering on its own port, but no longer on the URL
    assert served_version(again) == "2"

    assert stat.S_IMODE(target.keys_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.root.stat().st_mode) == 0o700
    key = json.loads(target.keys_file.read_text())["keys"][0]
    assert len(key) >= 32 and all(key not in p.read_text() for p in (target.root / "logs").iterdir())
    assert httpx.post(f"{target.url}/score", json=[]).status_code == 401


def test_endpoint_cli_status_logs_and_stop(target, bundle, monkeypatch, capsys):
    monkeypatch.setenv("FIN_BEHAVIOR_ENDPOINT_DIR", str(target.root))
    monkeypatch.setenv("FIN_BEHAVIOR_ENDPOINT_PORT", str(target.port))
    monkeypatch.setenv("FIN_BEHAVIOR_ENVS_DIR", str(ENVS))
    get_settings.cache_clear()
    assert main(["endpoint", "status"]) == 1  # nothing deployed yet
    assert "NOT serving" in capsys.readouterr().out

    rollout(target, release(bundle[0], "1"), gates())
    assert main(["endpoint", "status"]) == 0
    out = capsys.readouterr().out
    assert target.url in out and "* blue  v1" in out and out.rstrip().endswith("serving")
    assert main(["endpoint", "logs", "--lines", "5"]) == 0
    assert "serving model version 1" in capsys.readouterr().out

    assert main(["endpoint", "stop"]) == 0
    assert main(["endpoint", "status"]) == 1
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{target.url}/health")

    assert main(["endpoint", "rollback"]) == 1  # no registry, no `previous`: a clear refusal, not a traceback
    assert "nothing changed" in capsys.readouterr().err
