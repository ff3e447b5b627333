"""The scoring service object in process (inside the serving environment, no socket): client mistakes are 4xx
JSON that names them, unknown categories are scored and counted, and the bundle is verified as a whole."""

from __future__ import annotations

import json
import shutil

import pytest

from fin_behavior.records import ModelInfo
from fin_behavior.serving.bundle import BundleError, verify_bundle
from fin_behavior_tests.serving_fixtures import post, probe


@pytest.fixture(scope="module")
def record(bundle) -> dict:
    return bundle[1][0]


def _errors(replies: list[dict]) -> list[tuple[int, str]]:
    return [(r["status"], json.loads(r["body"]).get("error", "")) for r in replies]


def test_numbers_and_nesting_that_once_were_500s_are_4xx(serving_env, bundle, record, tmp_path):
    columns = list(record)
    body = json.dumps(record)
    replies, _ = probe(
        serving_env,
        bundle[0],
        [
            post(body.replace(f'"age": {json.dumps(record["age"])}', '"age": ' + "1" + "0" * 400)),  # 10**400
            post({"dataframe_records": [record | {"loan_term": 0}, record | {"age": "x"}]}),
            post(body.replace(f'"age": {json.dumps(record["age"])}', '"age": ' + "9" * 5_000)),  # > 4,300 digits
            post("[" * 10_000 + "]" * 10_000),
            post('{"a":' * 10_000 + "1" + "}" * 10_000),
            post(body.replace(f'"city": {json.dumps(record["city"])}', '"city": ' + "[" * 10_000 + "]" * 10_000)),
            post({"dataframe_split": {"columns": [[1]], "data": [[1]]}}),
            post({"dataframe_split": {"columns": [*columns, columns[0]], "data": [[1] * (len(columns) + 1)]}}),
            post(body.replace(f'"age": {json.dumps(record["age"])}', '"age": 1e400')),
            post(body.replace(f'"age": {json.dumps(record["age"])}', '"age": 1e39')),  # beyond float32
        ],
        tmp_path,
    )
    errors = _errors(replies)
    assert all(400 <= status < 500 for status, _ in errors), errors
    assert "must be a finite number" in errors[0][1] and errors[0][0] == 422
    assert "record 1: field 'age' must be a number" in errors[1][1]
    assert "'age' must be a finite number" in errors[2][1]
    assert errors[3] == (400, "body is nested too deeply to be a record or a list of records")
    assert errors[4][0] == 400 and errors[5][0] == 400
    assert "columns must be field names (strings), got [1]" in errors[6][1]
    assert "names a field twice" in errors[7][1]
    assert "'age' must be a finite number" in errors[8][1] and "within +-3.4e38" in errors[9][1]
    assert all(len(message) < 600 for _, message in errors)  # a huge value is never echoed whole


def test_unknown_paths_and_methods_answer_json_with_a_correct_allow(serving_env, bundle, tmp_path):
    requests = [
        {"method": "GET", "path": "/nope"},
        {"method": "GET", "path": "/score/"},
        {"method": "PUT", "path": "/score", "body": "{}"},
        {"method": "GET", "path": "/score"},
        {"method": "POST", "path": "/health"},
        {"method": "DELETE", "path": "/ready"},
        {"method": "POST", "path": "/version"},
        {"method": "PATCH", "path": "/metrics"},
        {"method": "POST", "path": "/openapi.json"},
    ]
    replies, _ = probe(serving_env, bundle[0], requests, tmp_path)
    for request, reply in zip(requests, replies, strict=True):
        assert reply["headers"]["content-type"] == "application/json", (request, reply)
        assert json.loads(reply["body"])["error"], (request, reply)
    assert [r["status"] for r in replies] == [404, 404, 405, 405, 405, 405, 405, 405, 405]
    assert replies[2]["headers"]["allow"] == "POST" and replies[3]["headers"]["allow"] == "POST"
    assert all(set(r["headers"]["allow"].split(", ")) == {"GET", "HEAD"} for r in replies[4:])  # what they answer


def test_an_unknown_category_is_scored_named_and_counted(serving_env, bundle, record, tmp_path):
    log = tmp_path / "predictions.jsonl"
    new_city = record | {"city": "Omaha"}
    replies, metrics = probe(
        serving_env,
        bundle[0],
        [post(new_city), post([record, new_city | {"card_type": "Diners"}]), post(new_city | {"city": 3})],
        tmp_path,
        prediction_log=str(log),
    )
    one, two, wrong_type = (json.loads(r["body"]) for r in replies)
    assert replies[0]["status"] == replies[1]["status"] == 200
    assert one["unknown_categories"] == [{"record": 0, "field": "city", "value": "Omaha"}]
    assert 0.0 <= one["probabilities"][0] <= 1.0 and one["predictions"][0] in (0, 1)
    assert {(u["record"], u["field"]) for u in two["unknown_categories"]} == {(1, "city"), (1, "card_type")}
    assert replies[2]["status"] == 422 and "'city' must be a string" in wrong_type["error"]  # types stay strict
    assert 'fin_behavior_unknown_category_total{field="city"} 2.0' in metrics
    assert 'fin_behavior_unknown_category_total{field="card_type"} 1.0' in metrics
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line.get("unknown_categories") for line in lines] == [{"city": 1}, {"city": 1, "card_type": 1}, None]


def test_predictions_follow_the_models_decision_threshold(serving_env, bundle, tmp_path):
    _, records, _ = bundle
    copy = tmp_path / "bundle"
    shutil.copytree(bundle[0], copy)
    info = ModelInfo.read(copy)
    answers = {}
    for threshold in (0.0, 1.01):  # everything flagged / nothing flagged; the probabilities do not move
        ModelInfo(**{**info.__dict__, "decision_threshold": threshold}).write(copy)
        replies, _ = probe(serving_env, copy, [post(records[:20])], tmp_path)
        answers[threshold] = json.loads(replies[0]["body"])
    assert answers[0.0]["predictions"] == [1] * 20 and answers[1.01]["predictions"] == [0] * 20
    assert answers[0.0]["probabilities"] == answers[1.01]["probabilities"]


def _copy(bundle_dir, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    return copy


def test_the_bundle_is_verified_as_a_whole(bundle, tmp_path):
    good = verify_bundle(bundle[0], ModelInfo.read(bundle[0]).digest)
    assert set(good.sha256) == {
        "model.joblib",
        "model.onnx",
        "expected.json",
        "reference_profile.json",
        "global_importance.json",
    }

    extra = _copy(bundle[0], tmp_path / "extra")
    (extra / "notes.txt").write_text("not part of the bundle")
    with pytest.raises(BundleError, match=r"notes\.txt is not listed in model_info\.json"):
        verify_bundle(extra)

    # The manifest loses its model.onnx entry and model.onnx is swapped: once served, now refused.
    swapped = _copy(bundle[0], tmp_path / "swapped")
    info = ModelInfo.read(swapped)
    ModelInfo(**{**info.__dict__, "sha256": {k: v for k, v in info.sha256.items() if k != "model.onnx"}}).write(swapped)
    (swapped / "model.onnx").write_bytes(b"another model")
    with pytest.raises(BundleError, match=r"model\.onnx is not listed"):
        verify_bundle(swapped)

    # A manifest rewritten to match a swapped file still does not match the digest the registry recorded.
    rewritten = _copy(bundle[0], tmp_path / "rewritten")
    (rewritten / "model.onnx").write_bytes(b"another model")
    import hashlib

    sha = info.sha256 | {"model.onnx": hashlib.sha256(b"another model").hexdigest()}
    ModelInfo(**{**info.__dict__, "sha256": sha}).write(rewritten)
    verify_bundle(rewritten)  # consistent in itself...
    with pytest.raises(BundleError, match="does not match the registered bundle"):
        verify_bundle(rewritten, info.digest)  # ...but not what was registered

    missing = _copy(bundle[0], tmp_path / "missing")
    (missing / "expected.json").unlink()
    with pytest.raises(BundleError, match=r"expected\.json is listed in model_info\.json but missing"):
        verify_bundle(missing)


def test_the_service_refuses_a_manifest_other_than_the_registered_one(serving_env, bundle, tmp_path):
    replies, _ = probe(
        serving_env,
        bundle[0],
        [{"method": "GET", "path": "/ready", "key": False}, post(bundle[1][0])],
        tmp_path,
        bundle_digest="0" * 64,
    )
    assert replies[0]["status"] == 503 and "does not match the registered bundle" in replies[0]["body"]
    assert replies[1]["status"] == 503 and "model not loaded" in replies[1]["body"]
