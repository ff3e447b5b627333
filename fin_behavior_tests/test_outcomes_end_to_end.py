"""Retraining on decay, end to end: the platform serves, hold-out rows are scored through its URL, their labels come
back with one segment flipped (concept drift), the `monitor` job's realized_performance fails realized_roc_auc,
the decay sensor requests `retrain` once for the window, and the retrain trains on the labelled production rows
(a new data version, its lineage naming ground_truth) and goes through every gate."""

from __future__ import annotations

import json
import time

import dagster as dg
import httpx
import pandas as pd

from fin_behavior.cli import main
from fin_behavior.data.columns import FEATURES, TARGET
from fin_behavior.defs.sensors import performance_decay_sensor
from fin_behavior.ml import registry
from fin_behavior_tests.e2e import FAST, failure_message


def _holdout(platform) -> tuple[list[dict], list[int]]:
    artifacts = platform.var / "artifacts"
    rows = pd.read_parquet(next((artifacts / "processed_dataset").glob("*/processed_dataset.parquet")))
    holdout = pd.read_parquet(next((artifacts / "trained_model").glob("*/holdout_ids.parquet")))["transaction_id"]
    rows = rows[rows["transaction_id"].isin(set(holdout))]
    return json.loads(rows[list(FEATURES)].to_json(orient="records")), rows[TARGET].astype(int).tolist()


def test_flipped_labels_fail_realized_roc_auc_and_the_sensor_retrains_through_the_gates(platform, capsys):
    result = platform.run("full_pipeline", FAST)
    assert result.success, failure_message(result)
    assert platform.instance.get_latest_materialization_event(dg.AssetKey("processed_dataset"))
    records, labels = _holdout(platform)
    headers = {"X-API-Key": platform.target.key()}
    decisions = []
    with httpx.Client(base_url=platform.target.url, headers=headers, timeout=30) as client:
        for i in range(0, len(records), 20):
            answer = client.post("/score", json=records[i : i + 20])
            assert answer.status_code == 200
            decisions += [(answer.json()["request_id"], row) for row in range(len(records[i : i + 20]))]
        flipped = [1 - y if r["transaction_type"] == "Transfer" else y for r, y in zip(records, labels, strict=True)]
        body = [{"request_id": rid, "row": row, "label": y} for (rid, row), y in zip(decisions, flipped, strict=True)]
        assert client.post("/feedback", json={"labels": body}).status_code == 202
        assert client.post("/feedback", json={"labels": [{"request_id": "nobody", "label": 0}]}).status_code == 202
    time.sleep(0.8)  # the prediction log is written every 0.5 s

    monitored = platform.run("monitor", {"ops": {"realized_performance": {"config": {"min_labelled_rows": 200}}}})
    assert monitored.success
    checks = {
        e.check_name: e for e in monitored.get_asset_check_evaluations() if e.asset_key.path == ["realized_performance"]
    }
    assert checks["label_coverage"].passed and not checks["realized_roc_auc"].passed, {
        k: c.description for k, c in checks.items()
    }
    metadata = monitored.asset_materializations_for_node("realized_performance")[0].metadata
    assert metadata["labels"].value["unknown"] == 1 and metadata["labels"].value["matched"] == len(records)
    assert "realized_roc_auc" in metadata["decayed"].value and metadata["plots"].value.count("data:image/png") == 2

    assert main(["endpoint", "stats"]) == 0
    said = capsys.readouterr().out
    assert f"v1: {len(records)} of {len(records)} decisions labelled" in said and "FAIL realized_roc_auc" in said

    request = platform.tick(performance_decay_sensor)
    assert isinstance(request, dg.RunRequest) and request.job_name == "retrain", request
    assert request.run_key == f"decay-{metadata['window_key'].value}" and request.tags["fin_behavior/trigger"] == (
        "performance_decay"
    )
    assert isinstance(platform.tick(performance_decay_sensor), dg.SkipReason)  # once per window

    retrained = platform.run(request.job_name, FAST, tags=request.tags)
    event = platform.instance.get_latest_materialization_event(dg.AssetKey("processed_dataset")).asset_materialization
    assert event.metadata["labelled_production_rows"].value == len(records)
    assert event.tags["dagster/input_data_version/ground_truth"] not in ("", "none")  # the lineage names the labels
    gates = {e.check_name: e.passed for e in retrained.get_asset_check_evaluations()}
    # The flipped segment makes a third of the production rows' labels noise for this model's features: the new
    # model misses accuracy_gate, so it never registers and v1 keeps serving.
    assert {"roc_auc_gate", "accuracy_gate", "latency_gate"} <= set(gates) and gates["accuracy_gate"] is False, gates
    assert not retrained.success and platform.alias(registry.PRODUCTION) == "1"
    answer = httpx.post(f"{platform.target.url}/score", json=records[0], headers=headers)
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
