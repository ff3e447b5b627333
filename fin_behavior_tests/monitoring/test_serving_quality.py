"""serving_quality's judgement on real traffic: hold-out rows replayed through the real endpoint do not drift,
shifted rows do and name the features, a failing model fails error_rate, heavy requests fail latency_slo, and
an alert reaches a real HTTP receiver once."""

from __future__ import annotations

import time

import httpx
import pytest

from fin_behavior.data.columns import FEATURES
from fin_behavior.deploy.rollout import rollout
from fin_behavior.monitoring import alerts
from fin_behavior.monitoring.evaluate import evaluate
from fin_behavior.monitoring.profile import read_profile
from fin_behavior.outcome import Outcome
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import webhook_bodies, webhook_receiver
from fin_behavior_tests.serving_fixtures import gates, local_target, release, start_service


@pytest.fixture(scope="module")
def holdout(trained) -> list[dict]:
    _, dataset, test_ids = trained
    rows = dataset[dataset["transaction_id"].isin(set(test_ids))][list(FEATURES)]
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows.to_dict("records")]


@pytest.fixture
def endpoint(tmp_path, bundle):
    target = local_target(tmp_path / "endpoint")
    rollout(target, release(bundle[0], "1"), gates())
    yield target
    target.stop_all()


def _replay(url: str, key: str, records: list[dict], batch: int = 10) -> None:
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as client:
        for i in range(0, len(records), batch):
            assert client.post("/score", json=records[i : i + batch]).status_code == 200


def _judge(directory, bundle_dir, since: float, **overrides):
    time.sleep(0.8)  # the service writes its log every 0.5 s
    settings = get_settings().with_overrides(**({"min_monitor_rows": 500} | overrides))
    _, qualities = evaluate(settings, directory, lambda _: read_profile(bundle_dir), since=since)
    return qualities


def test_holdout_traffic_passes_and_shifted_traffic_drifts_naming_the_features(endpoint, bundle, holdout):
    logs = endpoint.root / "predictions"
    started = time.time()
    _replay(endpoint.url, endpoint.key(), holdout)
    quality = _judge(logs, bundle[0], started)["1"]
    assert quality.figures["requests"] == 100 and quality.figures["rows"] == len(holdout)
    assert all(v.outcome.passed for v in quality.checks.values()), {
        k: v.outcome.message for k, v in quality.checks.items()
    }
    assert max(quality.drift.features.values()) < 0.1 and quality.drift.probability < 0.1

    shifted_at = time.time()
    shifted = [r | {"age": r["age"] + 25, "credit_utilisation": r["credit_utilisation"] * 2} for r in holdout]
    _replay(endpoint.url, endpoint.key(), shifted)
    drifted = _judge(logs, bundle[0], shifted_at)["1"]
    check = drifted.checks["input_drift"]
    assert not check.outcome.passed and not check.warning  # an alarm, not a warning
    assert set(list(drifted.drift.features)[:2]) == {"age", "credit_utilisation"}
    assert drifted.checks["latency_slo"].outcome.passed and drifted.checks["error_rate"].outcome.passed


def test_a_failing_model_fails_error_rate(serving_env, tampered_bundle, bundle, tmp_path, holdout):
    service = start_service(serving_env, tampered_bundle, tmp_path)  # its bundle is refused: every score is a 503
    try:
        started = time.time()
        with service.client() as client:
            statuses = {client.post("/score", json=holdout[i]).status_code for i in range(50)}
        assert statuses == {503}
        quality = _judge(tmp_path, bundle[0], started)["7"]
    finally:
        service.process.terminate()
    check = quality.checks["error_rate"]
    assert not check.outcome.passed and check.outcome.actual == 1.0 and "50 x 503" in check.outcome.message


def test_heavy_requests_fail_latency_slo(endpoint, bundle, holdout):
    started = time.time()
    _replay(endpoint.url, endpoint.key(), holdout * 3, batch=1_000)  # 1,000 rows a request
    quality = _judge(endpoint.root / "predictions", bundle[0], started, max_latency_ms=5.0)["1"]
    check = quality.checks["latency_slo"]
    assert not check.outcome.passed and check.outcome.actual > 5.0 and "setting max_latency_ms" in check.outcome.message


def test_a_failed_check_alerts_a_webhook_once_per_window(tmp_path):
    with webhook_receiver() as url:
        failed = alerts.Alert(
            "input_drift", "3", Outcome(False, 0.9, 0.2, "inputs drifted: age 0.9"), "http://ui/runs/1"
        )
        sent_file = tmp_path / "sent.json"
        assert alerts.send(url, [failed], sent_file, 900) == ["3/input_drift"]
        assert alerts.send(url, [failed], sent_file, 900) == []  # the same condition, the same window: quiet
        unreachable = "http://127.0.0.1:9/nothing-listens"
        assert alerts.send(unreachable, [failed], tmp_path / "other.json", 900, log=print) == []  # logged, not fatal
    assert len(webhook_bodies) == 1
    body = webhook_bodies[0]
    assert body["check"] == "input_drift" and body["model_version"] == "3" and body["actual"] == 0.9
    assert "input_drift failed: inputs drifted: age 0.9" in body["text"] and "http://ui/runs/1" in body["text"]
