"""The platform end to end, as a user drives it: the real jobs and sensors of the Definitions, MLflow, uv-built
serving environments and endpoint processes. Nothing is faked. The scenarios run in order on one state
directory, like a user's day: each builds on the last."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest

from fin_behavior.cli import main
from fin_behavior.data.columns import FEATURES
from fin_behavior.data.generate import generate_csv
from fin_behavior.defs.sensors import data_version_sensor
from fin_behavior.ml import registry
from fin_behavior.settings import get_settings
from fin_behavior_tests.e2e import FAST, failure_message, log_messages
from fin_behavior_tests.helpers import webhook_bodies, webhook_receiver
from fin_behavior_tests.serving_fixtures import Load, served_version


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


def test_1b_holdout_traffic_does_not_drift_and_the_platforms_probes_are_counted_apart(platform):
    """After full_pipeline the window holds the rollout's and the checks' probes (the same few known records,
    hundreds of times); replayed hold-out rows are judged alone, and the probes are counted apart."""
    artifacts = platform.var / "artifacts"
    rows = pd.read_parquet(next((artifacts / "processed_dataset").glob("*/processed_dataset.parquet")))
    holdout = pd.read_parquet(next((artifacts / "trained_model").glob("*/holdout_ids.parquet")))["transaction_id"]
    records = json.loads(rows[rows["transaction_id"].isin(set(holdout))][list(FEATURES)].to_json(orient="records"))
    assert len(records) >= 900
    with httpx.Client(base_url=platform.target.url, headers={"X-API-Key": platform.target.key()}) as client:
        for i in range(0, len(records), 20):
            assert client.post("/score", json=records[i : i + 20]).status_code == 200
    time.sleep(0.8)  # the log is written every 0.5 s
    result = platform.run("monitor")  # the default window: everything full_pipeline sent is in it
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["serving_quality"]}
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    metadata = result.asset_materializations_for_node("serving_quality")[0].metadata
    figures = metadata["figures"].value
    batches = (len(records) + 19) // 20
    assert (figures["requests"], figures["rows"]) == (batches + 1, len(records) + 1)  # and test_1's client request
    assert figures["probe_requests"] == metadata["probe_requests"].value >= 100  # smoke, parity, latency, checks
    assert f"{figures['probe_requests']} platform probes counted apart" in metadata["window"].value


def test_1c_a_rerun_with_nothing_changed_reuses_every_stage_without_touching_mlflow(platform):
    """The nothing-changed path: each stage finds its work done from a small local record (the published version,
    the local view of the unchanged registry, the live color) and the MLflow store is not written at all."""
    from fin_behavior.ml.registry_view import store_stamp

    uri = get_settings().tracking_uri
    runs, stamp = len(platform.client.search_runs(experiment_ids=_experiments(platform))), store_stamp(uri)
    result = platform.run("full_pipeline", FAST)
    assert result.success, failure_message(result)
    said = "\n".join(log_messages(platform, result))
    assert "reused trained model" in said and f"reused {platform.name} version 1: already candidate" in said
    assert "v1 already serves on" in said and "nothing to roll out" in said
    registered = result.asset_materializations_for_node("registered_model_version")[0].metadata
    assert registered["reused"].value and not registered["newly_registered"].value
    assert all(c.passed for c in result.get_asset_check_evaluations())  # judged again, every check
    assert store_stamp(uri) == stamp  # no MLflow run, version, tag or alias written: the store file is untouched
    assert len(platform.client.search_runs(experiment_ids=_experiments(platform))) == runs
    assert [str(v.version) for v in platform.client.search_model_versions(f"name='{platform.name}'")] == ["1"]


def test_1d_the_model_risk_report_of_v1_has_every_section_and_says_what_is_on_disk(platform, capsys):
    """Written and attached when v1 was registered, from v1's own records: its JSON is the evidence on disk."""
    from fin_behavior.governance.report import NOT_RECORDED, REPORT_TAG, SECTIONS
    from fin_behavior.records import read_json

    event = platform.instance.get_latest_materialization_event(dg.AssetKey("registered_model_version"))
    html_path = Path(event.asset_materialization.metadata["model_risk_report"].value)
    report = json.loads(html_path.with_suffix(".json").read_text())
    assert list(report) == ["report", *SECTIONS]
    identity = report["identity"]
    assert (identity["model"], identity["version"]) == (platform.name, "1")
    artifacts = platform.var / "artifacts"
    for stage, version_key in (
        ("processed_dataset", "data_version"),
        ("trained_model", "trained_model_version"),
        ("compatible_model", "compatible_model_version"),
    ):
        on_disk = read_json(artifacts / stage / identity[version_key] / "evidence.json")
        assert report["gates"]["stages"][stage] == on_disk  # every verdict, as published with the version
    trained = artifacts / "trained_model" / identity["trained_model_version"]
    assert {k: v for k, v in report["fairness"].items() if k != "recorded"} == read_json(trained / "fairness.json")
    training = read_json(trained / "training.json")
    assert {r["metric"]: r["model"] for r in report["performance"]["against_baseline"]} == {
        m: v for m, v in training["metrics"].items() if f"baseline_{m}" in training["metrics"]
    }
    assert report["method"]["accepted_not_used"] == ["gender"] and "gender" not in report["method"]["model_inputs"]
    data = read_json(artifacts / "processed_dataset" / identity["data_version"] / "data.json")
    assert {k: v for k, v in report["data"].items() if k != "recorded"} == data
    assert report["intended_use"]["owner"]["default"] is True  # the shipped card says its fields are defaults
    bundle = artifacts / "compatible_model" / identity["compatible_model_version"] / "bundle"
    shipped = read_json(bundle / "global_importance.json")["columns"]  # the version's own global view
    importance = report["global_explanation"]["importance"]
    assert importance == {c: round(v, 6) for c, v in shipped.items()}
    assert list(importance.values()) == sorted(importance.values(), reverse=True)  # largest first
    assert report["approvals_and_history"] == {"recorded": False, "note": NOT_RECORDED}  # issue 29 fills it
    gates = report["gates"]["stages"]["trained_model"]["verdicts"]
    assert {
        v["check"]: v["passed"] for v in gates if v["check"] in ("selection_rate_ratio", "equalized_odds_difference")
    } == {
        "selection_rate_ratio": True,
        "equalized_odds_difference": True,
    }

    page = html_path.read_text()
    for title in ("Identity", "Intended use", "Data", "Method", "Performance", "Fairness by group",
                  "Global explanation", "Gates", "Monitoring plan", "Approvals and history"):  # fmt: skip
        assert f". {title}" in page
    assert page.count("data:image/png;base64,") == 6 and "<script" not in page and "http" not in page.split("<body>")[0]
    assert page.count(NOT_RECORDED) == 1  # approvals and history (issue 29)

    version = platform.client.get_model_version(platform.name, "1")
    assert version.tags[REPORT_TAG] == f"runs:/{version.run_id}/{REPORT_TAG}/model_risk_report.html"
    attached = {Path(a.path).name for a in platform.client.list_artifacts(version.run_id, REPORT_TAG)}
    assert attached == {"model_risk_report.html", "model_risk_report.json"}

    capsys.readouterr()
    assert main(["report", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(html_path)
    assert main(["report", "9"]) == 1
    assert "has no version 9" in capsys.readouterr().err
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert platform.name in listing and "serving v1" in listing and "(default)" in listing


def _experiments(platform) -> list[str]:
    return [e.experiment_id for e in platform.client.search_experiments()]


def test_2_new_data_is_retrained_and_rolled_over_with_no_failed_request(platform):
    generate_csv(platform.var / "data" / "transactions.csv", rows=5_000, seed=7)  # the raw file is replaced
    request = platform.tick(data_version_sensor)
    assert isinstance(request, dg.RunRequest) and request.job_name == "retrain"

    with Load(platform.target, platform.record(), quiet_until_rollout=True, interval=Load.STEADY) as load:
        result = platform.run(request.job_name, FAST, request.tags)
    assert result.success, failure_message(result)
    assert load.failures == {} and load.saw_rollout, load.failures
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
    platform.move_serving_pins(tmp_path, monkeypatch)
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

    with Load(platform.target, platform.record(), quiet_until_rollout=True, interval=Load.STEADY) as load:
        result = platform.run(request.job_name, FAST, request.tags)
    assert not result.success
    message = failure_message(result)
    assert "Transaction Date (200 rows)" in message and "max_invalid_fraction" in message
    assert load.failures == {} and set(load.outcomes) == {"v3"}
    assert platform.alias(registry.PRODUCTION) == "3"


ROLLBACK_WHEN_LOCKED = """
import pathlib, sys, time
from mlflow import MlflowClient
from fin_behavior.cli import main
from fin_behavior.settings import get_settings
# MLflow's imports and store set-up take seconds: done before the deploy starts (it waits for "ready"), so the
# rollback reaches the lock while the deploy still holds it.
MlflowClient(tracking_uri=get_settings().tracking_uri).search_registered_models()
print("ready", flush=True)
holder = pathlib.Path(sys.argv[1])
while "Dagster run" not in (holder.read_text() if holder.exists() else ""):
    time.sleep(0.02)
sys.exit(main(["endpoint", "rollback"]))
"""


def test_7_concurrent_deploy_and_rollback_serialize_and_both_tell_the_truth(platform, tmp_path):
    """A `dagster job execute ... -j deploy` and, while it holds the endpoint, `fin-behavior endpoint rollback` in
    another process, under load: the rollback waits, exactly one version serves, and each report is true."""
    bin_dir = Path(sys.executable).parent
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | platform.env | {"DAGSTER_HOME": str(home)}
    run_config = tmp_path / "v2.yaml"
    run_config.write_text('ops: {live_deployment: {config: {release: "2"}}}\n')
    holder = platform.var / "endpoint" / "rollout.json"
    holder.unlink(missing_ok=True)
    assert (platform.alias(registry.PRODUCTION), served_version(platform.target)) == ("3", "3")
    commands = {
        "rollback": [sys.executable, "-c", ROLLBACK_WHEN_LOCKED, str(holder)],
        "deploy": [str(bin_dir / "dagster"), "job", "execute", "-m", "fin_behavior.definitions", "-j", "deploy",
                   "-c", str(run_config)],
    }  # fmt: skip
    # The deploy holds the endpoint while its new color starts and passes its gates (300 latency requests here, a
    # second or so): the rollback, started first and ready, polls for the holder and surely arrives meanwhile.
    envs = {"rollback": env, "deploy": env | {"FIN_BEHAVIOR_GATE_LATENCY_REQUESTS": "300"}}
    # Two clients keep requests in flight throughout both rollouts. Six at full pressure sent ~33,000 requests in a
    # full run (the load clients were 31% of the test workers' CPU, py-spy; two thirds of it here).
    with Load(platform.target, platform.record(), clients=2, quiet_until_rollout=True, interval=Load.STEADY) as load:
        running = {}
        for name, command in commands.items():
            running[name] = subprocess.Popen(
                command, env=envs[name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            if name == "rollback":  # its imports and MLflow set-up done before the deploy starts
                assert running[name].stdout.readline() == "ready\n", running[name].communicate(timeout=60)[0]
        outputs = {name: process.communicate(timeout=600)[0] for name, process in running.items()}
    assert all(process.returncode == 0 for process in running.values()), outputs
    assert load.failures == {} and load.saw_rollout, load.failures  # the URL answered throughout both
    assert load.outcomes["v3"] and load.outcomes["v2"]

    assert "waiting for the rollout in progress on this endpoint: Dagster run" in outputs["rollback"], outputs
    assert re.findall(r"v(\d+) serves on \w+ at", outputs["deploy"])[-1] == "2"  # true when it said it
    assert "v3 is production again" in outputs["rollback"] and "v2 is previous" in outputs["rollback"]
    assert (platform.alias(registry.PRODUCTION), platform.alias(registry.PREVIOUS)) == ("3", "2")
    assert served_version(platform.target) == "3"  # exactly one version serves: the registry's production


def test_8_stop_then_start_serves_production_again(platform, capsys):
    production = platform.alias(registry.PRODUCTION)
    assert main(["endpoint", "stop"]) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{platform.target.url}/health", timeout=2)
    assert main(["endpoint", "status"]) == 1
    assert main(["endpoint", "start"]) == 0  # e.g. after a machine restart: evidence, bundle, gates again
    assert f"v{production} (production) serves at" in capsys.readouterr().out
    assert served_version(platform.target) == production
    assert main(["endpoint", "status"]) == 0
    out = capsys.readouterr().out
    assert f"answering:  v{production}" in out and "supervisor: running" in out and out.rstrip().endswith("serving")
    assert main(["endpoint", "start"]) == 0 and "already serves" in capsys.readouterr().out


def test_9_monitoring_judges_what_serves_and_alerts_once(platform, monkeypatch):
    """Rows like the training data, then the same rows shifted, through the URL; the `monitor` job after each."""
    rows = pd.read_parquet(next((platform.var / "artifacts" / "processed_dataset").glob("*/processed_dataset.parquet")))
    records = json.loads(rows.sample(1_000, random_state=0)[list(FEATURES)].to_json(orient="records"))
    # A 6-second window: only what this test sends (the earlier tests' load clients hammered one record).
    window = {"ops": {"serving_quality": {"config": {"monitor_window_minutes": 0.1}}}}
    time.sleep(6)

    def replay(batch: list[dict]) -> dict[str, dg.AssetCheckEvaluation]:
        with httpx.Client(base_url=platform.target.url, headers={"X-API-Key": platform.target.key()}) as client:
            for i in range(0, len(batch), 20):
                assert client.post("/score", json=batch[i : i + 20]).status_code == 200
        time.sleep(0.8)  # the log is written every 0.5 s
        result = platform.run("monitor", window)
        assert result.success
        return {
            e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["serving_quality"]
        }

    with webhook_receiver() as url:
        monkeypatch.setenv("FIN_BEHAVIOR_ALERT_WEBHOOK_URL", url)
        get_settings.cache_clear()
        steady = replay(records)
        assert all(c.passed for c in steady.values()), {k: c.description for k, c in steady.items()}
        assert webhook_bodies == []
        shifted = replay(
            [r | {"age": r["age"] + 25, "credit_utilisation": r["credit_utilisation"] * 2} for r in records]
        )
        assert not shifted["input_drift"].passed and "age" in shifted["input_drift"].description
        assert shifted["latency_slo"].passed and shifted["error_rate"].passed
        # the shifted window's own materialization (the next run's 6-second window may hold no inputs any more on
        # a loaded machine): latency and PSI plots, the table by version
        judged = platform.instance.get_latest_materialization_event(dg.AssetKey("serving_quality"))
        metadata = judged.asset_materialization.metadata
        assert metadata["plots"].value.count("data:image/png;base64,") == 2 and "| v" in metadata["by_version"].value
        again = platform.run("monitor", window)  # the same condition in the same window: no second page
        assert again.success
    assert [body["check"] for body in webhook_bodies].count("input_drift") == 1
