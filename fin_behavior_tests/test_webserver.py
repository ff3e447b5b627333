"""What a user sees in `dagster dev`: the real webserver on loopback, asked through its GraphQL API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fin_behavior.deploy.local import free_port
from fin_behavior_tests.helpers import EXPECTED_JOBS

QUERY = """{
  assetNodes { assetKey { path } groupName isObservable
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
  repositoriesOrError { ... on RepositoryConnection { nodes {
    jobs { name }
    sensors { name sensorState { status } }
    schedules { name scheduleState { status } } } } }
}"""


@pytest.fixture(scope="module")
def graphql(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    port = free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    log = (home / "webserver.log").open("w")
    process = subprocess.Popen(
        [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-m", "fin_behavior.definitions"],
        env=os.environ | {"DAGSTER_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                answer = httpx.post(url, json={"query": QUERY}, timeout=30).json()
                if answer.get("data", {}).get("assetNodes"):
                    yield answer["data"]
                    return
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(1)
        raise RuntimeError(f"webserver did not answer: {(home / 'webserver.log').read_text()[-2000:]}")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_assets_in_groups_with_their_checks(graphql):
    assets = {"/".join(n["assetKey"]["path"]): n for n in graphql["assetNodes"]}
    groups = {name: node["groupName"] for name, node in assets.items()}
    assert groups == {
        "raw_transactions": "data",
        "ground_truth": "data",
        "processed_dataset": "data",
        "trained_model": "model",
        "compatible_model": "model",
        "training_environment": "environments",
        "serving_environment": "environments",
        "registered_model_version": "deployment",
        "live_deployment": "deployment",
        "serving_traffic": "monitoring",
        "serving_quality": "monitoring",
        "realized_performance": "monitoring",
        "challenger_comparison": "monitoring",
        "submitted_model": "submissions",
        "serving_image": "image",
        "batch_scores": "batch",
    }
    assert {name for name, node in assets.items() if node["isObservable"]} == {
        "raw_transactions",
        "ground_truth",
        "training_environment",
        "serving_environment",
        "serving_traffic",
    }
    checks = {
        name: {c["name"]: c["blocking"] for c in node["assetChecksOrError"]["checks"]} for name, node in assets.items()
    }
    assert checks["processed_dataset"]["no_target_leakage"] is True
    assert checks["processed_dataset"]["min_row_count"] is False
    assert checks["trained_model"] == {
        "roc_auc_gate": True,
        "accuracy_gate": True,
        "latency_gate": True,
        "selection_rate_ratio": True,
        "equalized_odds_difference": True,
    }
    assert set(checks["compatible_model"]) == {
        "loads_cleanly",
        "quality_parity",
        "onnx_parity",
        "feature_parity",
        "environment_consistency",
    }
    assert checks["registered_model_version"] == {"candidate_is_current_bundle": True}
    assert checks["live_deployment"] == dict.fromkeys(
        ["health", "smoke", "served_version_is_production", "latency_p95"], False
    )
    assert checks["serving_image"] == dict.fromkeys(["smoke", "parity", "latency"], True)
    assert checks["serving_quality"] == dict.fromkeys(
        ["traffic_volume", "latency_slo", "error_rate", "input_drift", "prediction_drift"], False
    )
    assert checks["realized_performance"] == dict.fromkeys(
        ["label_coverage", "realized_roc_auc", "realized_recall"], False
    )
    assert checks["challenger_comparison"] == {"challenger_verdict": False}  # a verdict, never a block


def test_sensors_are_on_by_default_and_jobs_are_there(graphql):
    repository = graphql["repositoriesOrError"]["nodes"][0]
    sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
    assert sensors == dict.fromkeys(
        [
            "data_version_sensor",
            "environment_drift_sensor",
            "batch_inbox_sensor",
            "performance_decay_sensor",
            "approval_sensor",
        ],
        "RUNNING",
    )
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repository["schedules"]}
    assert schedules == {"monitor_every_5_minutes": "RUNNING"}
    jobs = {j["name"] for j in repository["jobs"]}
    assert jobs >= EXPECTED_JOBS
