"""Every decision has a request id: the scoring service's answers (POST /score and the Open Inference Protocol's
infer, errors too) carry it in their JSON and their X-Request-ID header, a client's own valid id round-trips, an
invalid one is a 400 that states the rule, and the prediction log's lines carry the id (read back as the monitor
and a later join would). Over real HTTP against the service running in the local serving environment."""

from __future__ import annotations

import json
import time

import pytest

from fin_behavior.monitoring.window import read_window
from fin_behavior.serving.prediction_log import inputs_line_end
from fin_behavior.serving.request_ids import RULE, is_valid, request_id_for

NAME = "model"  # the service's default name for Open Inference Protocol clients


@pytest.mark.parametrize(
    ("offered", "valid"),
    [
        ("a", True),
        ("x" * 64, True),
        ("Order-2026.12.07_0001", True),
        ("x" * 65, False),
        ("two words", False),
        ('quote"d', False),
        ("slash/ed", False),
        ("caf\u00e9", False),
        ("line\nbreak", False),
    ],
)
def test_the_rule_is_what_the_docs_say(offered, valid):
    assert is_valid(offered) is valid
    request_id, refused = request_id_for(offered)
    assert (request_id == offered) is valid and (refused is None) is valid
    if not valid:
        assert RULE in refused and is_valid(request_id)


def test_a_missing_id_is_made_fresh_for_each_request():
    made = {request_id_for(offered)[0] for offered in (None, "") for _ in range(50)}
    assert len(made) == 100 and all(is_valid(request_id) and len(request_id) == 32 for request_id in made)


def _logged(path, wanted: set[str], count: int) -> list[dict]:
    """The lines of `path` naming one of `wanted` (the service flushes every 0.5 s)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        ours = [line for line in lines if line.get("request_id") in wanted]
        if len(ours) >= count or time.monotonic() > deadline:
            return ours
        time.sleep(0.1)


def test_every_answer_names_its_request_and_the_log_joins_on_it(service, bundle):
    record = bundle[1][0]
    oip_body = {
        "inputs": [
            {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
            for k, v in record.items()
        ]
    }
    with service.client() as client:
        own = client.post("/score", json=record, headers={"X-Request-ID": "case-4711.a_b"})
        made = client.post("/score", json=record)
        again = client.post("/score", json=record)
        refused = client.post("/score", json=record, headers={"X-Request-ID": "has space"})
        too_long = client.post("/score", json=record, headers={"X-Request-ID": "x" * 65})
        bad_body = client.post("/score", json={"age": "x"}, headers={"X-Request-ID": "bad-body-1"})
        infer = client.post(f"/v2/models/{NAME}/infer", json=oip_body, headers={"X-Request-ID": "oip-1"})
        wrong_method = client.get("/score", headers={"X-Request-ID": "get-1"})
    unauthorized = service.client(key="wrong-key-wrong-key-wrong").post("/score", json=record)

    assert own.status_code == 200 and own.json()["request_id"] == own.headers["X-Request-ID"] == "case-4711.a_b"
    assert made.status_code == 200 and made.json()["request_id"] == made.headers["X-Request-ID"]
    assert is_valid(made.json()["request_id"]) and made.json()["request_id"] != again.json()["request_id"]
    for answer in (refused, too_long):
        assert answer.status_code == 400 and RULE in answer.json()["error"], answer.text
        assert answer.json()["request_id"] == answer.headers["X-Request-ID"] != "has space"
    assert "has space" in refused.json()["error"]
    assert bad_body.status_code == 422 and bad_body.json()["request_id"] == "bad-body-1"
    assert infer.status_code == 200 and infer.json()["request_id"] == infer.headers["X-Request-ID"] == "oip-1"
    assert wrong_method.status_code == 405 and wrong_method.headers["X-Request-ID"] == "get-1"
    assert unauthorized.status_code == 401 and is_valid(unauthorized.headers["X-Request-ID"])

    scored = {"case-4711.a_b": 200, made.json()["request_id"]: 200, "bad-body-1": 422, "oip-1": 200}
    requests = _logged(service.predictions, set(scored), len(scored))
    assert {line["request_id"]: line["outcome"] for line in requests} == scored
    inputs = service.predictions.with_name("predictions.inputs.jsonl")
    sampled = _logged(inputs, set(scored), 3)  # the 422 carries no inputs
    assert {line["request_id"] for line in sampled} == {"case-4711.a_b", made.json()["request_id"], "oip-1"}
    own_line = next(
        line for line in inputs.read_bytes().splitlines(True) if line.endswith(inputs_line_end("case-4711.a_b"))
    )
    assert json.loads(own_line)["response"]["probabilities"] == own.json()["probabilities"]

    # The monitor reads the lines as before: the id is one more field it passes over.
    window = read_window(service.predictions.parent, time.time() - 60, time.time() + 1, max_sampled=100)
    traffic = window.versions["7"]
    assert traffic.outcomes[200] >= 3 and traffic.outcomes[422] >= 1 and traffic.outcomes[400] >= 2
    columns, probabilities = traffic.sample(list(record))
    assert own.json()["probabilities"][0] in probabilities and record["age"] in columns["age"]
