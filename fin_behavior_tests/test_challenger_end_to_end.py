"""Champion and challenger, end to end: v1 serves, v2 is trained on new data and registered (the `candidate`, not
deployed); hold-out rows are scored through the live URL (v1), v2's answers to the same requests are logged under
their request ids by the service's own writer (what a shadow will do: shadow routing is a later piece), the true
labels come back through /feedback, and the `compare_challenger` job states a verdict with its figures."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import httpx
import joblib
import numpy as np
import pandas as pd

from fin_behavior.data.columns import FEATURES, TARGET
from fin_behavior.data.generate import generate_csv
from fin_behavior.deploy.deployer import fetch_release, prediction_log_dir, releases_dir
from fin_behavior.ml import registry
from fin_behavior.monitoring.challenger import CHECK, VERDICTS, WORSE
from fin_behavior.records import BundleFiles
from fin_behavior.serving.bundle import Bundle, verify_bundle
from fin_behavior.serving.prediction_log import PredictionLog
from fin_behavior.serving.scoring import score_records
from fin_behavior.settings import get_settings
from fin_behavior_tests.e2e import FAST, failure_message

NO_DEPLOY = {"ops": {**FAST["ops"], "live_deployment": {"config": {"skip": True}}}}


def test_a_registered_challenger_is_compared_with_the_champion_on_the_same_labelled_requests(platform):
    assert (result := platform.run("full_pipeline", FAST)).success, failure_message(result)
    generate_csv(platform.var / "data" / "transactions.csv", rows=5_000, seed=7)  # new data: a new model
    assert (result := platform.run("retrain", NO_DEPLOY)).success, failure_message(result)
    assert (platform.alias(registry.PRODUCTION), platform.alias(registry.CANDIDATE)) == ("1", "2")

    artifacts = platform.var / "artifacts"
    rows = pd.read_parquet(sorted((artifacts / "processed_dataset").glob("*/processed_dataset.parquet"))[-1])
    positive = rows[TARGET] == 1  # 100 positives, 500 negatives: each class above challenger_min_class_rows (50)
    rows = pd.concat([rows[positive].sample(100, random_state=0), rows[~positive].sample(500, random_state=0)])
    records = json.loads(rows[list(FEATURES)].to_json(orient="records"))
    settings = get_settings()
    bundle = fetch_release(platform.client, platform.name, "2", releases_dir(settings)).bundle
    # v2's own pipeline (its joblib twin of the ONNX graph: onnxruntime is in the serving environment, not here)
    challenger = Bundle(replace(verify_bundle(bundle), runtime="sklearn"), joblib.load(bundle / BundleFiles.MODEL))
    shadow = PredictionLog(prediction_log_dir(settings) / "shadow.jsonl", "2", 1.0, 1 << 30, 2)
    headers = {"X-API-Key": platform.target.key()}
    ids = []
    with httpx.Client(base_url=platform.target.url, headers=headers, timeout=30) as client:
        for record in records:
            answer = client.post("/score", json=[record])
            assert answer.status_code == 200 and answer.json()["model_version"] == "1"
            ids.append(answer.json()["request_id"])
            theirs = score_records(challenger, [record], 10, "2").answer | {"request_id": ids[-1]}
            shadow.write(0.002, 200, 1, json.dumps([record]).encode(), {}, json.dumps(theirs).encode(), ids[-1])
        shadow.close()
        labels = [{"request_id": rid, "label": int(y)} for rid, y in zip(ids, rows[TARGET], strict=True)]
        assert client.post("/feedback", json={"labels": labels}).status_code == 202
    time.sleep(0.8)  # the prediction log is written every 0.5 s

    compared = platform.run("compare_challenger", {"ops": {"challenger_comparison": {"config": {}}}})
    assert compared.success, failure_message(compared)
    metadata = compared.asset_materializations_for_node("challenger_comparison")[0].metadata
    figures = metadata["figures"].value
    assert (metadata["champion_version"].value, metadata["challenger_version"].value) == ("1", "2")
    assert figures["paired_decisions"] == figures["labelled_pairs"] == 600
    assert 0 <= figures["agreement"] <= 1 and figures["probability_psi"] >= 0
    assert figures["champion_requests"] >= 600 and figures["challenger_requests"] == 600
    assert figures["challenger_latency_p95_ms"] == 2.0 and figures["champion_error_rate"] == 0.0
    low, high = figures["roc_auc_difference_interval"]
    assert low <= figures["roc_auc_difference"] <= high
    difference = figures["challenger_roc_auc"] - figures["champion_roc_auc"]
    assert np.isclose(figures["roc_auc_difference"], difference, atol=2e-4)
    verdict = metadata["verdict"].value
    assert verdict in VERDICTS and "data:image/png" in metadata["plot"].value
    (check,) = [e for e in compared.get_asset_check_evaluations() if e.check_name == CHECK]
    assert check.description.startswith(verdict) and check.passed == (verdict != WORSE)


def test_a_comparison_of_a_version_with_itself_or_an_unknown_alias_is_refused_saying_what_to_name(platform):
    same = platform.run("compare_challenger", {"ops": {"challenger_comparison": {"config": {"challenger": "1"}}}})
    assert not same.success and "are both v1; name two different versions" in failure_message(same)
    unknown = platform.run("compare_challenger", {"ops": {"challenger_comparison": {"config": {"challenger": "nope"}}}})
    assert not unknown.success and "has the alias 'nope'" in failure_message(unknown)
