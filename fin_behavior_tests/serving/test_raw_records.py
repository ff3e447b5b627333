"""The bank's own record at /score: the raw Kaggle-layout transaction scored through the one feature definition,
over real HTTP, by the service running in the local serving environment."""

from __future__ import annotations

import json
import re
import shutil

import httpx
import pytest

from fin_behavior.data.columns import RAW_COLUMNS
from fin_behavior.records import BundleFiles, ModelInfo, read_json
from fin_behavior.serving.features import INPUTS, definition_id
from fin_behavior_tests.serving_fixtures import start_service


@pytest.fixture(scope="module")
def twins(bundle):
    """(feature-shaped records, their raw twins) the bundle ships in expected.json."""
    expected = read_json(bundle[0] / BundleFiles.EXPECTED)
    return expected["records"], expected["raw_records"]


def _full_raw(raw: dict, text: str) -> dict:
    """A raw twin as the bank holds it: every column of the layout, the non-inputs filled in."""
    return {name: raw.get(name, text) for name in RAW_COLUMNS} | {"Transaction Amount": 9_999.0}


def test_the_bundle_records_the_definition_it_verified(bundle, twins):
    info = ModelInfo.read(bundle[0])
    assert info.feature_definition == definition_id()
    features, raw = twins
    assert len(raw) == len(features) > 50


def test_a_raw_record_and_its_feature_shaped_twin_get_the_same_answer(service, twins):
    features, raw = twins
    with service.client() as client:
        by_features = client.post("/score", json=features).json()
        by_raw = client.post("/score", json=[_full_raw(r, "x") for r in raw])
        one = client.post("/score", json=_full_raw(raw[0], "x")).json()
    assert by_raw.status_code == 200, by_raw.text
    answer = by_raw.json()
    assert answer["probabilities"] == by_features["probabilities"]
    assert answer["predictions"] == by_features["predictions"]
    assert one["probabilities"] == by_features["probabilities"][:1]
    ignored = answer["ignored_columns"]
    assert {"Transaction Amount", "Account Balance After Transaction", "Customer ID", "Email"} <= set(ignored)
    assert "Transaction Date" not in ignored and "Credit Limit" not in ignored
    assert ignored == [c for c in RAW_COLUMNS if c in ignored]  # in the layout's order
    assert "ignored_columns" not in by_features  # the feature-shaped answer is as before


def test_openapi_describes_the_raw_record(service, twins):
    schema = httpx.get(f"{service.url}/openapi.json").json()
    raw = schema["components"]["schemas"]["RawRecord"]
    assert set(raw["required"]) == set(INPUTS) and set(raw["properties"]) == set(RAW_COLUMNS)
    assert "Atlanta" in raw["properties"]["City"]["enum"]
    assert re.match(raw["properties"]["Transaction Date"]["pattern"], twins[1][0]["Transaction Date"])
    body = schema["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]
    assert body == {"oneOf": [{"$ref": "#/components/schemas/Record"}, {"$ref": "#/components/schemas/RawRecord"}]}


def test_numbers_as_the_file_writes_them_and_dates_with_leading_zeros(service, twins):
    _, raw = twins
    record = dict(raw[1])
    as_text = record | {"Age": str(record["Age"]), "Credit Limit": f"{record['Credit Limit']}"}
    month, day, year = record["Transaction Date"].split("/")
    zero_padded = record | {"Transaction Date": f"{int(month):02d}/{int(day):02d}/{year}"}
    with service.client() as client:
        answers = [client.post("/score", json=r).json() for r in (record, as_text, zero_padded)]
    assert answers[0]["probabilities"] == answers[1]["probabilities"] == answers[2]["probabilities"]


def _bad_raw(record: dict) -> list[tuple[str, object, str]]:
    no_date = {k: v for k, v in record.items() if k != "Transaction Date"}
    return [
        ("missing input", no_date, "missing column 'Transaction Date'"),
        ("missing inputs", {"Age": 41, "Transaction Date": "1/2/2023"}, "missing columns 'Gender', 'City', "),
        ("date in another format", record | {"Transaction Date": "2023-12-07"}, "'Transaction Date' must be a date"),
        ("impossible date", record | {"Date Of Account Opening": "2/30/2020"}, "'Date Of Account Opening' must be"),
        ("number as word", record | {"Credit Limit": "lots"}, "column 'Credit Limit' must be a number"),
        ("number python-style", record | {"Credit Limit": "2_700"}, "column 'Credit Limit' must be a number"),
        ("number with spaces", record | {"Credit Limit": " 2700 "}, "column 'Credit Limit' must be a number"),
        ("number in other digits", record | {"Age": "\u0664\u0661"}, "column 'Age' must be a number"),
        ("category as number", record | {"City": 7}, "column 'City' must be a string"),
        ("unknown column", record | {"Shoe Size": 44}, "unknown column(s) 'Shoe Size'"),
        ("feature mixed in", record | {"age": 41}, "unknown column(s) 'age'"),
        (
            "transaction before opening",
            record | {"Date Of Account Opening": "1/2/2023", "Transaction Date": "1/1/2023"},
            "is before 'Date Of Account Opening'",
        ),
        ("record in list", [record, "x"], "record 1 must be a JSON object"),
    ]


def test_bad_raw_records_are_422s_that_name_the_raw_column(service, twins):
    _, raw = twins
    with service.client() as client:
        for name, body, message in _bad_raw(raw[0]):
            response = client.post("/score", json=body)
            assert response.status_code == 422, name
            assert message in response.json()["error"], (name, response.json())
        assert client.post("/score", json=raw[0]).status_code == 200  # still serving


def test_unknown_category_in_a_raw_record_is_scored_and_named_by_its_raw_column(service, twins):
    _, raw = twins
    with service.client() as client:
        answer = client.post("/score", json=raw[0] | {"City": "Atlantis"}).json()
    assert answer["unknown_categories"] == [{"record": 0, "field": "City", "value": "Atlantis"}]


def test_a_bundle_without_the_definition_refuses_raw_records_and_scores_features(serving_env, bundle, twins, tmp_path):
    """A version built before the definition was recorded (or with another one) is not scored raw: no skew."""
    features, raw = twins
    for recorded, says in (("", "records no feature definition"), ("kaggle-transaction-v0:0", "derives")):
        old = tmp_path / f"bundle-{len(recorded)}"
        shutil.copytree(bundle[0], old)
        payload = json.loads((old / ModelInfo.FILE).read_text()) | {"feature_definition": recorded}
        (old / ModelInfo.FILE).write_text(json.dumps(payload))
        (tmp_path / f"service-{len(recorded)}").mkdir()
        running = start_service(serving_env, old, tmp_path / f"service-{len(recorded)}")
        try:
            with running.client() as client:
                refused = client.post("/score", json=raw[:2])
                scored = client.post("/score", json=features[:2])
        finally:
            running.process.terminate()
            running.process.wait(timeout=10)
        assert refused.status_code == 422 and says in refused.json()["error"], refused.json()
        assert "feature-shaped record" in refused.json()["error"]
        assert scored.status_code == 200


def test_the_monitor_reads_raw_requests_as_features(serving_env, bundle, twins, tmp_path):
    from fin_behavior.monitoring.window import read_window

    features, raw = twins
    running = start_service(serving_env, bundle[0], tmp_path)
    try:
        with running.client() as client:
            assert client.post("/score", json=raw[:20]).status_code == 200
    finally:
        running.process.terminate()
        running.process.wait(timeout=10)
    window = read_window(tmp_path, 0, 2e9, 1_000)
    names = list(features[0])
    columns, probabilities = next(iter(window.versions.values())).sample(names)
    assert len(probabilities) == 20
    assert columns["account_age_days"] == [r["account_age_days"] for r in features[:20]]
    assert columns["city"] == [r["city"] for r in features[:20]]
