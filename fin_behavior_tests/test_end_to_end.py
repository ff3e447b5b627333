"""The platform end to end, as a user drives it: the real jobs and sensors of the Definitions, MLflow, uv-built
serving environments and endpoint processes. Nothing is faked. The scenarios run in order on one state
directory, like a user's day: each builds on the last."""

from __future__ import annotations

import dagster as dg
import httpx
import pandas as pd
import pytest

from fin_behavior.cli import main
from fin_behavior.data.generate import generate_csv
from fin_behavior.defs.sensors import data_version_sensor, environment_drift_sensor
from fin_behavior.environments.spec import DEFAULT_SPEC_FILE
from fin_behavior.ml import registry
from fin_behavior.settings import get_settings
from fin_behavior_tests.platform import FAST, Platform, failure_message, running_platform, use
from fin_behavior_tests.serving_fixtures import Load, served_version


@pytest.fixture(scope="module")
def platform_state(tmp_path_factory):
    with running_platform(tmp_path_factory) as state:
        yield state


@pytest.fixture
def platform(platform_state, monkeypatch) -> Platform:
    return use(platform_state, monkeypatch)


def test_1_full_pipeline_from_nothing_serves_the_production_version(platform):
    result = platform.run("full_pipeline", FAST)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["live_deployment"]}
    assert set(checks) == {"health", "smoke", "served_version_is_production", "latency_p95"}
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}

    assert platform.alias(registry.PRODUCTION) == platform.alias(registry.CANDIDATE) == "1"
    response = httpx.post(
        f"{platform.target.url}/score", json=platform.record(), headers={"X-API-Key": platform.target.key()}
    )
    assert response.status_code == 200 and response.json()["model_version"] == "1"
    event = platform.instance.get_latest_materialization_event(dg.AssetKey("live_deployment")).asset_materialization
    assert event.metadata["url"].value == platform.target.url and event.metadata["served_version"].value == "1"


def test_2_new_data_is_retrained_and_rolled_over_with_no_failed_request(platform):
    generate_csv(platform.var / "data" / "transactions.csv", rows=5_000, seed=7)  # the raw file is replaced
    request = platform.tick(data_version_sensor)
    assert isinstance(request, dg.RunRequest) and request.job_name == "retrain"

    with Load(platform.target, platform.record()) as load:
        result = platform.run(request.job_name, FAST, request.tags)
    assert result.success, failure_message(result)
    assert load.failures == {}, load.failures
    assert load.outcomes["v1"] and load.outcomes["v2"]
    assert (platform.alias(registry.PRODUCTION), platform.alias(registry.PREVIOUS)) == ("2", "1")
    assert served_version(platform.target) == "2"

    again = platform.tick(data_version_sensor)  # a second tick requests nothing
    assert isinstance(again, dg.SkipReason), again


def test_3_rollback_job_and_cli_put_the_previous_version_back(platform, capsys):
    result = platform.run("rollback")
    assert result.success
    assert served_version(platform.target) == "1"
    assert (platform.alias(registry.PRODUCTION), platform.alias(registry.PREVIOUS)) == ("1", "2")

    assert main(["endpoint", "rollback"]) == 0  # and back again, through the same gates
    assert served_version(platform.target) == "2"
    assert main(["endpoint", "status"]) == 0
    status = capsys.readouterr().out
    assert platform.target.url in status and "v2" in status and "serving" in status


def test_4_skip_deployment_and_deploy_existing(platform):
    skipped = platform.run(
        "full_pipeline", FAST | {"ops": FAST["ops"] | {"live_deployment": {"config": {"skip": True}}}}
    )
    assert skipped.success
    assert served_version(platform.target) == "2" and platform.alias(registry.PRODUCTION) == "2"

    existing = platform.run("deploy", {"ops": {"live_deployment": {"config": {"release": "1"}}}})
    assert existing.success and served_version(platform.target) == "1"
    missing = platform.run("deploy", {"ops": {"live_deployment": {"config": {"release": "no-such-alias"}}}})
    assert not missing.success and "no version of" in failure_message(missing)
    assert served_version(platform.target) == "1"


def test_5_serving_pin_change_is_rebuilt_registered_and_deployed(platform, tmp_path, monkeypatch):
    spec = tmp_path / "serving_environments.toml"
    spec.write_text(DEFAULT_SPEC_FILE.read_text().replace('"scikit-learn==1.8.0"', '"scikit-learn==1.7.2"'))
    assert spec.read_text() != DEFAULT_SPEC_FILE.read_text()
    monkeypatch.setenv("FIN_BEHAVIOR_SERVING_ENVIRONMENTS_FILE", str(spec))
    get_settings.cache_clear()

    request = platform.tick(environment_drift_sensor)
    assert isinstance(request, dg.RunRequest) and request.job_name == "rebuild_compatible", request
    result = platform.run(request.job_name, tags=request.tags)
    assert result.success, failure_message(result)
    event = platform.instance.get_latest_materialization_event(dg.AssetKey("compatible_model")).asset_materialization
    assert event.metadata["sklearn_serving"].value == "1.7.2"
    assert platform.alias(registry.PRODUCTION) == "3" and served_version(platform.target) == "3"


def test_6_bad_raw_file_fails_clearly_and_the_endpoint_keeps_serving(platform):
    raw = platform.var / "data" / "transactions.csv"
    frame = pd.read_csv(raw, dtype=str)
    frame.loc[:199, "Transaction Date"] = "not a date"  # 4% invalid, above the 1% default
    frame.to_csv(raw, index=False)
    request = platform.tick(data_version_sensor)
    assert isinstance(request, dg.RunRequest)

    with Load(platform.target, platform.record()) as load:
        result = platform.run(request.job_name, FAST, request.tags)
    assert not result.success
    message = failure_message(result)
    assert "Transaction Date (200 rows)" in message and "max_invalid_fraction" in message
    assert load.failures == {} and set(load.outcomes) == {"v3"}
    assert platform.alias(registry.PRODUCTION) == "3"
