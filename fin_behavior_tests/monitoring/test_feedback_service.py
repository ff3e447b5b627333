"""Outcomes through the real scoring service: hold-out rows scored, their true labels posted to POST /feedback by
the request ids the answers carried; the realized figures match the validation figures; a segment whose labels
flip (concept drift) fails realized_roc_auc; unknown ids are counted; bad posts are refused saying why."""

from __future__ import annotations

import json
import time

import pytest

from fin_behavior.data.columns import FEATURES, TARGET
from fin_behavior.ml.evaluate import holdout_metrics
from fin_behavior.monitoring.realized import evaluate
from fin_behavior.records import ModelInfo
from fin_behavior.settings import get_settings


@pytest.fixture(scope="module")
def holdout(trained) -> tuple[list[dict], list[int]]:
    _, dataset, test_ids = trained
    rows = dataset[dataset["transaction_id"].isin(set(test_ids))]
    return json.loads(rows[list(FEATURES)].to_json(orient="records")), rows[TARGET].astype(int).tolist()


def _score(service, records: list[dict], batch: int = 10) -> list[tuple[str, int]]:
    """Each record's decision: (request id, row)."""
    decisions = []
    with service.client() as client:
        for i in range(0, len(records), batch):
            answer = client.post("/score", json=records[i : i + batch])
            assert answer.status_code == 200
            decisions += [(answer.json()["request_id"], row) for row in range(len(records[i : i + batch]))]
    return decisions


def _post_labels(service, decisions: list[tuple[str, int]], labels: list[int]) -> None:
    body = [{"request_id": rid, "row": row, "label": y} for (rid, row), y in zip(decisions, labels, strict=True)]
    with service.client() as client:
        for i in range(0, len(body), 500):
            answer = client.post("/feedback", json={"labels": body[i : i + 500]})
            assert answer.status_code == 202 and answer.json() == {"accepted": len(body[i : i + 500])}


def _judge(service, bundle_dir, validation: dict, since: float, labelled: int):
    """The realized figures once the `labelled` decisions are in the service's logs: it writes them every 0.5 s,
    later when the machine is busy (10 s at most)."""
    threshold = ModelInfo.read(bundle_dir).decision_threshold
    deadline = time.monotonic() + 10
    while True:
        now = time.time()  # the window starts at `since` exactly (not later, by the time evaluate reads the clock)
        settings = get_settings().with_overrides(min_labelled_rows=200, outcome_window_hours=(now - since) / 3600)
        window = evaluate(settings, service.predictions.parent, None, lambda _: (threshold, validation), now=now)
        judged = window.results.get("7")
        if (judged and judged.figures["labelled"] >= labelled) or time.monotonic() > deadline:
            return window
        time.sleep(0.25)


@pytest.fixture(scope="module")
def validation(bundle, holdout) -> dict[str, float]:
    """What trained_model records for the version: the hold-out metrics at its threshold."""
    bundle_dir, _, proba = bundle
    import numpy as np

    return holdout_metrics(holdout[1], np.asarray(proba), ModelInfo.read(bundle_dir).decision_threshold)


def test_true_labels_posted_pass_and_match_validation_and_unknown_ids_are_counted(service, bundle, holdout, validation):
    records, labels = holdout
    started = time.time()
    decisions = _score(service, records)
    _post_labels(service, decisions, labels)
    with service.client() as client:
        assert (
            client.post("/feedback", json={"labels": [{"request_id": "never-scored", "label": 1}]}).status_code == 202
        )

    window = _judge(service, bundle[0], validation, started, len(records))
    realized = window.results["7"]
    assert all(o.passed for o in realized.checks.values()), {k: o.message for k, o in realized.checks.items()}
    assert realized.figures["labelled"] == len(records) and realized.figures["coverage"] == 1.0
    assert realized.figures["roc_auc"] == pytest.approx(validation["roc_auc"], abs=1e-3)
    assert realized.figures["recall"] == pytest.approx(validation["recall"], abs=1e-3)
    assert realized.figures["precision"] == pytest.approx(validation["precision"], abs=1e-3)
    assert window.label_counts["unknown"] == 1 and window.label_counts["matched"] == len(records)


def test_a_segment_whose_labels_flip_fails_realized_roc_auc(service, bundle, holdout, validation):
    records, labels = holdout
    started = time.time()
    decisions = _score(service, records)
    flipped = [1 - y if r["transaction_type"] == "Transfer" else y for r, y in zip(records, labels, strict=True)]
    assert flipped != labels
    _post_labels(service, decisions, flipped)
    realized = _judge(service, bundle[0], validation, started, len(records)).results["7"]
    assert realized.checks["label_coverage"].passed
    failed = realized.failed["realized_roc_auc"]
    assert failed.actual < validation["roc_auc"] - 0.05 and "the model decays in production" in failed.message


def test_bad_feedback_is_refused_whole_saying_why(service):
    with service.client() as client:
        bad = client.post(
            "/feedback", json={"labels": [{"request_id": "a", "label": 1}, {"request_id": "b", "label": 2}]}
        )
        assert bad.status_code == 422 and "labels[1]: label must be 0 or 1, not 2" in bad.json()["error"]
        assert client.post("/feedback", content=b"nope").status_code == 422
        assert client.post("/feedback", json={"labels": []}).status_code == 422
        for observed in (1e300, -1.0, "0001-01-01T00:00:00"):  # times a label can have, and finite (standard JSON)
            odd = client.post("/feedback", json={"labels": [{"request_id": "a", "label": 1, "observed_at": observed}]})
            assert odd.status_code == 422 and "between 2000 and 2100" in odd.json()["error"], (observed, odd.text)
        nested = client.post("/feedback", content=b'{"labels":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        assert nested.status_code == 422 and "nested too deeply" in nested.json()["error"]
        utf16 = client.post("/feedback", content='{"labels": [{"request_id": "a", "label": 1}]}'.encode("utf-16"))
        assert utf16.status_code == 422 and "not valid JSON" in utf16.json()["error"]
    with service.client(key="wrong") as client:
        assert client.post("/feedback", json={"labels": [{"request_id": "a", "label": 1}]}).status_code == 401
    time.sleep(0.1)
    lines = (service.predictions.parent / "feedback" / service.predictions.name).read_text().splitlines()
    assert not any('"request_id":"b"' in line or '"request_id":"a"' in line for line in lines)  # nothing half-kept


def test_a_body_dripped_slowly_is_cut_at_the_deadline_like_score_s(service):
    """/feedback reads its body with the service's own reader: size bound, deadline (408), cap on slow bodies."""
    import socket

    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            b"POST /feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + service.key.encode() + b"\r\nContent-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        answer = conn.recv(65_536).decode()  # nothing more is sent: the service answers at its body deadline
    assert answer.startswith("HTTP/1.1 408") and "did not arrive within" in answer, answer[:300]
    assert time.monotonic() - started < 25
