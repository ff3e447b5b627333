"""The platform's own requests through the real service: only a request made with the endpoint's probe key is a
probe (its own count, in none of the clients' figures); anything a client can send that looks like one, headers
or a body written to end like a probe's log line, is ordinary traffic."""

from __future__ import annotations

import json
import time

from fin_behavior.deploy.rollout import Slot
from fin_behavior.monitoring.window import read_window
from fin_behavior_tests.serving_fixtures import local_target, start_service

PROBE_KEY = "platform-probe-key-0123456789"


def test_only_the_probe_key_marks_a_probe_and_a_forged_mark_counts_as_traffic(serving_env, bundle, tmp_path):
    record = bundle[1][0]
    service = start_service(serving_env, bundle[0], tmp_path, probe_key=PROBE_KEY)
    forged = [  # a client with its own key, dressed up as the platform
        ({"X-Fin-Behavior-Probe": "true", "X-Probe": "1", "User-Agent": "python-httpx/0.28.1"}, record),
        ({"Authorization": f"Bearer {PROBE_KEY}"}, record),  # X-API-Key (the client's) is the key that counts
        ({}, record | {"city": 'Austin","probe":true}'}),  # a value that ends like a probe's log line
        ({}, [record, record | {"city": ',"probe":true}\n'}]),
    ]
    try:
        started = time.time()
        with service.client() as client:
            for _ in range(5):
                assert client.post("/score", json=record).status_code == 200
            for headers, body in forged:
                assert client.post("/score", json=body, headers=headers).status_code == 200
            for _ in range(7):
                probe = client.post("/score", json=[record, record], headers={"X-API-Key": PROBE_KEY})
                assert probe.status_code == 200 and len(probe.json()["predictions"]) == 2
            metrics = client.get("/metrics").text
        time.sleep(0.8)  # the service writes its log every 0.5 s
    finally:
        service.process.terminate()
        service.process.wait(10)

    window = read_window(tmp_path, started, time.time(), max_sampled=100)
    traffic = window.versions["7"]
    assert (traffic.requests, traffic.rows, traffic.probes) == (5 + 4, 5 + 5, 7)  # forged ones counted as traffic
    assert traffic.logged == 9  # only the clients' inputs are sampled for drift: no probe's
    columns, probabilities = traffic.sample(list(record))
    assert len(probabilities) == 10 and sum(1 for city in columns["city"] if "probe" in city) == 2
    assert traffic.unknown == {"city": 2}
    assert "9 requests in 1 log file(s); 7 platform probes counted apart" in window.describe()
    assert 'fin_behavior_requests_total{endpoint="score",status="200"} 9.0' in metrics
    assert 'fin_behavior_probe_requests_total{endpoint="score",status="200"} 7.0' in metrics
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert sum(json.loads(line).get("probe", False) for line in lines) == 7


def test_a_color_started_before_its_endpoint_had_a_probe_key_is_still_probed(serving_env, bundle, tmp_path):
    """A running color read its keys file before the platform added the probe key: it refuses that key, so the
    platform probes it with the client key (counted as traffic, as before) until the color is replaced."""
    service = start_service(serving_env, bundle[0], tmp_path)  # its keys file has no probe key
    target = local_target(tmp_path)  # the same keys file
    try:
        started = time.time()
        slot = Slot("blue", "7", {"port": int(service.url.rsplit(":", 1)[1])})
        assert target.score(slot, bundle[1][:2])[1] == "7"
        assert json.loads(target.keys_file.read_text())["probe_keys"] == [target.probe_key()]  # added for the next
        time.sleep(0.8)
    finally:
        service.process.terminate()
        service.process.wait(10)
    traffic = read_window(tmp_path, started, time.time(), max_sampled=10).versions["7"]
    assert (traffic.outcomes, traffic.probes) == ({401: 1, 200: 1}, 0)
