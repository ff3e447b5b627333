"""The scoring service over real HTTP on loopback, running inside the local serving environment."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import httpx
import pytest

from fin_behavior_tests.serving_fixtures import start_service


def test_liveness_and_readiness_are_open(service):
    assert httpx.get(f"{service.url}/health").json() == {"status": "alive"}
    ready = httpx.get(f"{service.url}/ready")
    assert ready.status_code == 200 and ready.json()["model_version"] == "7"


@pytest.mark.parametrize("key", [None, "", "wrong-key-wrong-key-wrong"])
def test_scoring_needs_a_valid_key(service, bundle, key):
    headers = {} if key is None else {"X-API-Key": key}
    for method, path in (("POST", "/score"), ("GET", "/metrics"), ("GET", "/version")):
        response = httpx.request(method, f"{service.url}{path}", headers=headers, json=bundle[1][0])
        assert response.status_code == 401, path


def test_every_body_shape_scores_like_the_verified_model(service, bundle):
    _, records, expected = bundle
    with service.client() as client:
        one = client.post("/score", json=records[0])
        assert one.status_code == 200 and one.headers["X-Model-Version"] == "7"
        assert one.headers["content-type"] == "application/json"
        assert int(one.headers["content-length"]) == len(one.content) and "transfer-encoding" not in one.headers
        assert one.json()["model_version"] == "7"
        assert one.json()["probabilities"][0] == pytest.approx(expected[0], abs=1e-4)

        many = client.post("/score", json=records[:50]).json()
        assert many["probabilities"] == pytest.approx(expected[:50], abs=1e-4)
        assert many["predictions"] == [int(p >= 0.5) for p in many["probabilities"]]

        assert (
            client.post("/score", json={"dataframe_records": records[:3]}).json()
            == client.post("/score", json=records[:3]).json()
        )
        columns = list(records[0])
        split = {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records[:3]]}}
        assert client.post("/score", json=split).json() == client.post("/score", json=records[:3]).json()
        bearer = httpx.post(f"{service.url}/score", json=records[0], headers={"Authorization": f"Bearer {service.key}"})
        assert bearer.status_code == 200


def _bad_inputs(record: dict) -> list[tuple[str, bytes | object, int, str]]:
    drop_age = {k: v for k, v in record.items() if k != "age"}
    return [
        ("malformed json", b'{"age": 4', 400, "not valid JSON"),
        ("not an object", b'"hello"', 422, "body must be"),
        ("wrong type", record | {"age": "forty"}, 422, "'age' must be a number"),
        ("bool as number", record | {"age": True}, 422, "'age' must be a number"),
        ("missing field", drop_age, 422, "missing field 'age'"),
        ("unknown field", record | {"shoe_size": 44}, 422, "unknown field(s) 'shoe_size'"),
        ("unknown category", record | {"card_type": "Diners"}, 422, "'card_type' has unknown value 'Diners'"),
        ("category as number", record | {"gender": 3}, 422, "'gender' must be a string"),
        ("NaN", json.dumps(record | {"age": float("nan")}).encode(), 422, "NaN is not a valid number"),
        ("Infinity", json.dumps(record | {"age": float("inf")}).encode(), 422, "Infinity is not a valid number"),
        ("empty list", [], 422, "no records to score"),
        ("too many rows", [record] * 1_001, 413, "at most 1000"),
        ("bad split", {"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}}, 422, "dataframe_split.data[0]"),
        ("record in list", [record, 5], 422, "record 1 must be a JSON object"),
    ]


def test_bad_input_gets_a_clear_4xx_and_never_breaks_the_server(service, bundle):
    record = bundle[1][0]
    with service.client() as client:
        for name, body, status, message in _bad_inputs(record):
            if isinstance(body, bytes):
                response = client.post("/score", content=body, headers={"content-type": "application/json"})
            else:
                response = client.post("/score", json=body)
            assert response.status_code == status, name
            assert message in response.json()["error"], (name, response.json())
        oversized = client.post("/score", content=b"[" + b" " * (1 << 20) + b"]")
        assert oversized.status_code == 413 and "byte limit" in oversized.json()["error"]
        chunked = client.post("/score", content=(b" " * (1 << 16) for _ in range(20)))  # no Content-Length
        assert chunked.status_code == 413 and "byte limit" in chunked.json()["error"]
        wrong_method = client.get("/score")
        assert wrong_method.status_code == 405 and "POST" in wrong_method.json()["error"]
        assert client.post("/score", json=record).status_code == 200  # still serving
        metrics = client.get("/metrics").text
    assert 'fin_behavior_requests_total{endpoint="score",status="422"}' in metrics
    assert 'fin_behavior_model_info{version="7"} 1.0' in metrics
    assert "fin_behavior_request_seconds_bucket" in metrics and "fin_behavior_in_flight" in metrics


def test_openapi_describes_the_model_fields(service):
    schema = httpx.get(f"{service.url}/openapi.json").json()
    record = schema["components"]["schemas"]["Record"]
    assert record["properties"]["age"] == {"type": "number"}
    assert "AMEX" in record["properties"]["card_type"]["enum"]
    assert set(schema["paths"]) == {"/score", "/health", "/ready", "/version", "/metrics"}


def _log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_prediction_log_has_one_line_per_request_and_no_key(service, bundle):
    bodies = [json.dumps(bundle[1][:2]).encode(), json.dumps(bundle[1][3]).encode(), b'{"age": "logged"}']
    hashes = [hashlib.sha256(body).hexdigest()[:16] for body in bodies]
    with service.client() as client:
        statuses = [
            client.post("/score", content=body, headers={"content-type": "application/json"}).status_code
            for body in bodies
        ]
    assert statuses == [200, 200, 422]
    deadline = time.monotonic() + 5  # buffered, flushed by the service every 0.5 s
    while time.monotonic() < deadline:
        ours = [line for line in _log_lines(service.predictions) if line["inputs_sha256"] in hashes]
        if len(ours) >= 3:
            break
        time.sleep(0.1)
    assert [(line["inputs_sha256"], line["outcome"], line["rows"]) for line in ours] == [
        (hashes[0], 200, 2),
        (hashes[1], 200, 1),
        (hashes[2], 422, 0),
    ]
    assert all(line["model_version"] == "7" and line["latency_ms"] > 0 for line in ours)
    assert service.key not in service.predictions.read_text() and service.key not in service.log.read_text()


def test_in_flight_cap_answers_503_instead_of_queueing(serving_env, bundle, tmp_path):
    service = start_service(serving_env, bundle[0], tmp_path, "--max-in-flight", "1")
    try:
        port = int(service.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:  # holds the only slot: body never completes
            slow.sendall(
                f"POST /score HTTP/1.1\r\nHost: x\r\nX-API-Key: {service.key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
            )
            time.sleep(0.3)
            busy = httpx.post(f"{service.url}/score", json=bundle[1][0], headers={"X-API-Key": service.key})
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        time.sleep(0.3)
        assert (
            httpx.post(f"{service.url}/score", json=bundle[1][0], headers={"X-API-Key": service.key}).status_code == 200
        )
    finally:
        service.process.terminate()


def test_tampered_bundle_is_refused_and_the_service_stays_not_ready(serving_env, tampered_bundle, tmp_path):
    service = start_service(serving_env, tampered_bundle, tmp_path)
    try:
        ready = httpx.get(f"{service.url}/ready")
        assert ready.status_code == 503 and "model.onnx does not match model_info.json" in ready.json()["reason"]
        score = httpx.post(f"{service.url}/score", json={}, headers={"X-API-Key": service.key})
        assert score.status_code == 503 and "model not loaded" in score.json()["error"]
    finally:
        service.process.terminate()
        service.process.wait(timeout=10)
    assert "model bundle refused" in service.log.read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the API keys file"),
        ("not json", "it is not such a JSON object"),
        ('{"keys": ["short"]}', "keys of 16+ characters"),
    ],
    ids=["missing", "not-json", "short-key"],
)
def test_unusable_keys_file_is_a_clear_start_up_error(serving_env, bundle, tmp_path, content, message):
    import subprocess

    keys = tmp_path / "keys.json"
    if content is not None:
        keys.write_text(content)
    started = subprocess.run(
        [
            str(serving_env.python),
            "-m",
            "fin_behavior.serving.app",
            "--bundle",
            str(bundle[0]),
            "--keys-file",
            str(keys),
            "--model-version",
            "1",
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 2 and message in started.stderr
    assert "Traceback" not in started.stderr
