"""Outcomes through the real scoring service: hold-out rows scored, their true labels posted to POST /feedback by
the request ids the answers carried; the realized figures match the validation figures; a segment whose labels
flip (concept drift) fails realized_roc_auc; unknown ids are counted; bad posts are refused saying why; a label
joins only the decisions of the key that posted it, also when the service logs to standard output (a pod)."""

from __future__ import annotations

import json
import secrets
import time

import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from fin_behavior.data.columns import FEATURES, TARGET
from fin_behavior.ml.evaluate import holdout_metrics
from fin_behavior.monitoring.collect import write_split
from fin_behavior.monitoring.realized import evaluate
from fin_behavior.records import ModelInfo
from fin_behavior.settings import get_settings
from fin_behavior_tests.serving_fixtures import start_service


@pytest.fixture(scope="module")
def holdout(trained) -> tuple[list[dict], list[int]]:
    _, dataset, test_ids = trained
    rows = dataset[dataset["transaction_id"].isin(set(test_ids))]
    return json.loads(rows[list(FEATURES)].to_json(orient="records")), rows[TARGET].astype(int).tolist()


def _score(service, records: list[dict], batch: int = 10, key: str | None = None) -> list[tuple[str, int, float]]:
    """Each record's decision, asked with `key` (default the service's own): (request id, row, probability)."""
    decisions = []
    with service.client(key) as client:
        for i in range(0, len(records), batch):
            answer = client.post("/score", json=records[i : i + batch])
            assert answer.status_code == 200
            rid, probabilities = answer.json()["request_id"], answer.json()["probabilities"]
            decisions += [(rid, row, p) for row, p in enumerate(probabilities)]
    return decisions


def _post_labels(service, decisions: list[tuple[str, int, float]], labels: list[int], key: str | None = None) -> None:
    """Labels posted with `key` (default the service's own); each post accepted whole, whoever's the ids are."""
    body = [{"request_id": rid, "row": row, "label": y} for (rid, row, _), y in zip(decisions, labels, strict=True)]
    with service.client(key) as client:
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


@pytest.fixture(scope="module")
def two_clients(serving_env, bundle, tmp_path_factory):
    """(the service, another client's key, the platform's probe key): the service's own key is client A's."""
    other, probe = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    workdir = tmp_path_factory.mktemp("two")
    running = start_service(serving_env, bundle[0], workdir, probe_key=probe, other_keys=(other,))
    yield running, other, probe
    running.process.terminate()
    running.process.wait(timeout=10)


def test_a_label_joins_only_decisions_of_the_key_that_posted_it(two_clients, bundle, holdout, validation):
    """Key B labels all of A's decisions first, wrongly; then A posts the true labels: the realized figures are those
    of the true labels exactly, and B's count as labels of ids never scored. B's own decisions take B's labels, and
    the platform's probe key labels any decision."""
    service, key_b, probe = two_clients
    records, labels = holdout
    started = time.time()
    a_decisions = _score(service, records)
    b_decisions = _score(service, records[:40], key=key_b)
    _post_labels(service, a_decisions, [1 - y for y in labels], key=key_b)  # accepted like any post: B learns nothing
    _post_labels(service, a_decisions, labels)
    _post_labels(service, b_decisions[:20], labels[:20], key=key_b)
    _post_labels(service, b_decisions[20:], labels[20:40], key=probe)

    window = _judge(service, bundle[0], validation, started, len(records) + 40)
    realized = window.results["7"]
    y = labels + labels[:40]
    p = [probability for *_, probability in a_decisions + b_decisions]
    threshold = ModelInfo.read(bundle[0]).decision_threshold
    assert realized.figures["labelled"] == len(y) and realized.figures["coverage"] == 1.0
    assert realized.figures["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert realized.figures["recall"] == pytest.approx(recall_score(y, [q >= threshold for q in p]), abs=1e-9)
    assert realized.figures["precision"] == pytest.approx(precision_score(y, [q >= threshold for q in p]), abs=1e-9)
    assert window.label_counts["matched"] == len(y) and window.label_counts["unknown"] == len(records)
    assert window.label_counts["duplicates"] == 0


def test_labels_posted_to_a_service_logging_to_standard_output_are_collected_and_joined(
    serving_env, bundle, holdout, validation, tmp_path
):
    """A pod on Kubernetes logs to standard output (`--prediction-log -`): the platform collects its lines
    (collect.write_split, as the monitor does through the API server); the labels posted to that pod's /feedback
    are collected with its decisions, and join them as on a local endpoint, another key's still counted unknown."""
    other = secrets.token_urlsafe(24)
    pod = start_service(serving_env, bundle[0], tmp_path, "--prediction-log", "-", other_keys=(other,))
    records, labels = holdout[0][:200], holdout[1][:200]
    try:
        started = time.time()
        decisions = _score(pod, records)
        _post_labels(pod, decisions, [1 - y for y in labels], key=other)
        _post_labels(pod, decisions, labels)
        collected, deadline = tmp_path / "collected", time.monotonic() + 10
        while (found := write_split(pod.log.read_text(), collected, "pod-0")) != (20, 20, 2 * len(records)):
            assert time.monotonic() < deadline, found  # the service writes its decisions every 0.5 s
            time.sleep(0.25)
    finally:
        pod.process.terminate()
        pod.process.wait(timeout=10)
    assert not pod.predictions.exists()  # nothing on disk but what was collected from the stream

    now = time.time()
    threshold = ModelInfo.read(bundle[0]).decision_threshold
    settings = get_settings().with_overrides(min_labelled_rows=100, outcome_window_hours=(now - started) / 3600)
    window = evaluate(settings, collected, None, lambda _: (threshold, validation), now=now)
    realized = window.results["7"]
    p = [probability for *_, probability in decisions]
    assert realized.figures["labelled"] == len(records) and realized.figures["coverage"] == 1.0
    assert realized.figures["roc_auc"] == pytest.approx(roc_auc_score(labels, p), abs=1e-9)
    assert window.label_counts["matched"] == len(records) and window.label_counts["unknown"] == len(records)
