"""The scoring service over real HTTP on loopback, running inside the local serving environment."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
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

        same = {"X-Request-ID": "same-request"}  # the answers differ in nothing else
        assert (
            client.post("/score", json={"dataframe_records": records[:3]}, headers=same).json()
            == client.post("/score", json=records[:3], headers=same).json()
        )
        columns = list(records[0])
        split = {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records[:3]]}}
        records_answer = client.post("/score", json=records[:3], headers=same).json()
        assert client.post("/score", json=split, headers=same).json() == records_answer
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
    assert set(schema["paths"]) == {
        "/score",
        "/explain",
        "/explain/{request_id}",
        "/health",
        "/ready",
        "/version",
        "/metrics",
    }
    explained = schema["paths"]["/explain/{request_id}"]["get"]["responses"]
    assert (
        "contributions"
        in explained["200"]["content"]["application/json"]["schema"]["properties"]["rows"]["items"]["properties"]
    )


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


def _raw(port: int, payload: bytes, read: bool = True, timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh connection; the whole answer (until the server closes or goes quiet)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        with contextlib.suppress(OSError):  # the server closed before taking it all: read what it answered
            conn.sendall(payload)
        chunks = []
        while read:
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _answers(raw: bytes) -> list[tuple[int, dict[str, str], dict]]:
    """(status, headers, JSON body) of each HTTP response in `raw`."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", len(rest)))
        out.append((int(lines[0].split()[1]), headers, json.loads(rest[:length] or b"{}")))
        raw = rest[length:]
    return out


def _score_request(service, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST /score HTTP/1.1\r\nHost: x\r\nX-API-Key: {service.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _port(service) -> int:
    return int(service.url.rsplit(":", 1)[1])


def test_a_full_queue_answers_503_at_once(serving_env, bundle, tmp_path):
    """Six requests pipelined at once on one connection, two places in the queue: two answers, four 503s."""
    service = start_service(serving_env, bundle[0], tmp_path, "--max-queued", "2")
    try:
        body = json.dumps(bundle[1][0]).encode()
        answers = _answers(_raw(_port(service), _score_request(service, body) * 6, timeout=3))
        assert [status for status, _, _ in answers] == [200, 200, 503, 503, 503, 503]
        busy = answers[2]
        assert busy[1]["retry-after"] == "1" and busy[1]["content-type"] == "application/json"
        assert "2 requests are waiting to be scored (at most 2)" in busy[2]["error"]
        assert httpx.post(f"{service.url}/score", json=bundle[1][0], headers={"X-API-Key": service.key}).is_success
    finally:
        service.process.terminate()


def _slow_body(port: int, key: str) -> socket.socket:
    """A client that sends its headers and one byte of a 100,000-byte body, then nothing."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.sendall(
        f"POST /score HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n[".encode()
    )
    return conn


def test_slow_bodies_cannot_starve_fast_clients(serving_env, bundle, tmp_path):
    service = start_service(
        serving_env, bundle[0], tmp_path, "--body-timeout-seconds", "2", "--max-pending-bodies", "8"
    )
    slow = [_slow_body(_port(service), service.key) for _ in range(8)]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        with service.client() as client:
            statuses = [client.post("/score", json=bundle[1][i % 50]).status_code for i in range(100)]
        fast_seconds = time.monotonic() - started
        assert statuses == [200] * 100 and fast_seconds < 1.5, fast_seconds  # no slot taken by the trickle

        ninth = _slow_body(_port(service), service.key)  # past the cap for bodies still arriving: refused now
        status, headers, body = _answers(ninth.recv(65536))[0]
        assert status == 503 and headers["connection"] == "close" and "still sending their body" in body["error"]
        ninth.close()

        answers = [_answers(conn.recv(65536))[0] for conn in slow]  # each gets its deadline's answer
        assert {status for status, _, _ in answers} == {408}
        assert "did not arrive within 2 s" in answers[0][2]["error"]
        assert time.monotonic() - started < 4
    finally:
        for conn in slow:
            conn.close()
        service.process.terminate()


def test_oversized_heads_are_refused_without_stalling_the_server(service):
    port = _port(service)
    stalls: list[float] = []
    attacking = threading.Event()

    def watch_health() -> None:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            assert client.get("/health").status_code == 200  # connected (not measured: the attack is not on yet)
            while attacking.is_set():
                started = time.monotonic()
                assert client.get("/health").status_code == 200
                stalls.append(time.monotonic() - started)
                time.sleep(0.01)

    attacking.set()
    watcher = threading.Thread(target=watch_health)
    watcher.start()
    try:
        started = time.monotonic()
        huge_header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * (64 << 20) + b"\r\n\r\n"
        answers = _answers(_raw(port, huge_header))
        header_seconds = time.monotonic() - started
        huge_url = b"GET /" + b"a" * (64 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        url_answers = _answers(_raw(port, huge_url))
    finally:
        attacking.clear()
        watcher.join()
    assert answers[0][0] == 431 and "over the 65,536-byte limit" in answers[0][2]["error"]
    assert url_answers[0][0] == 414 and "request line" in url_answers[0][2]["error"]
    assert header_seconds < 2 and stalls and max(stalls) < 0.5, (header_seconds, max(stalls, default=None))

    # Complete heads, each in one piece: measured exactly before any application code runs.
    long_url = _answers(_raw(port, b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    many_headers = "".join(f"X-H{i}: {'v' * 100}\r\n" for i in range(700)).encode()
    wide = _answers(_raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many_headers + b"\r\n"))
    malformed = _answers(_raw(port, b"GARBAGE\x00 / HTTP/9.9\r\n\r\n"))
    assert long_url[0][0] == 414 and wide[0][0] == 431
    assert malformed[0][0] == 400 and "malformed HTTP request" in malformed[0][2]["error"]
    assert httpx.get(f"{service.url}/health").status_code == 200


def test_tampered_bundle_is_refused_and_the_service_stays_not_ready(serving_env, tampered_bundle, tmp_path):
    service = start_service(serving_env, tampered_bundle, tmp_path)
    try:
        ready = httpx.get(f"{service.url}/ready")
        assert ready.status_code == 503 and "model.onnx does not match model_info.json" in ready.json()["reason"]
        score = httpx.post(f"{service.url}/score", json={}, headers={"X-API-Key": service.key})
        assert score.status_code == 503 and "model not loaded" in score.json()["error"]
        for method, path in (("POST", "/explain"), ("GET", "/explain/any-id")):  # not a 500, not a 501
            explain = httpx.request(method, f"{service.url}{path}", json={}, headers={"X-API-Key": service.key})
            assert explain.status_code == 503 and "model not loaded" in explain.json()["error"], explain.text
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
