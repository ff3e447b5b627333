"""The Open Inference Protocol (KServe v2) routes of the scoring service, in process inside the serving
environment: answers match the protocol's JSON shapes, inference agrees with POST /score, every client mistake
is a JSON 4xx, and the monitor sees inference requests like any other."""

from __future__ import annotations

import json

import jsonschema
import pytest

from fin_behavior.serving.validation import records_of
from fin_behavior_tests.serving_fixtures import post, probe

NAME = "financial-behavior-model"

# The response objects of KServe's docs/predict-api/v2/rest_predict_v2.yaml (components.schemas), as JSON Schema.
_SCALAR = {"type": ["number", "string", "boolean"]}
_TENSOR_DATA = {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/tensor_data"}, _SCALAR]}}
_METADATA_TENSOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["name", "datatype", "shape"],
}
SHAPES = {
    "$defs": {
        "tensor_data": _TENSOR_DATA,
        "server": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["name", "version", "extensions"],
        },
        "model": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _METADATA_TENSOR},
                "outputs": {"type": "array", "items": _METADATA_TENSOR},
            },
            "required": ["name", "platform"],
        },
        "inference_response": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "shape": {"type": "array", "items": {"type": "integer"}},
                            "datatype": {"type": "string"},
                            "data": {"$ref": "#/$defs/tensor_data"},
                        },
                        "required": ["name", "shape", "datatype", "data"],
                    },
                },
            },
            "required": ["model_name", "outputs"],
        },
        "error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
    }
}


def _conforms(body: dict, shape: str) -> None:
    jsonschema.validate(body, SHAPES | {"$ref": f"#/$defs/{shape}"})


def inference_request(records: list[dict], nested: bool = False, **extra) -> dict:
    """One tensor per feature, as a KServe client sends it."""
    inputs = []
    for name in records[0]:
        values = [r[name] for r in records]
        numeric = not isinstance(values[0], str)
        inputs.append(
            {
                "name": name,
                "shape": [len(values), 1] if nested else [len(values)],
                "datatype": "FP64" if numeric else "BYTES",
                "data": [[v] for v in values] if nested else values,
            }
        )
    return {"inputs": inputs, **extra}


def _get(path: str) -> dict:
    return {"method": "GET", "path": path}


def _infer(body, path: str = f"/v2/models/{NAME}/infer", **extra) -> dict:
    return post(body, **extra) | {"path": path}


@pytest.fixture(scope="module")
def records(bundle) -> list[dict]:
    return bundle[1][:20]


def test_health_and_metadata_answer_the_protocols_shapes(serving_env, bundle, tmp_path):
    model = f"/v2/models/{NAME}"
    paths = ["/v2", "/v2/health/live", "/v2/health/ready", model, f"{model}/versions/7", f"{model}/ready"]
    paths += [f"{model}/versions/7/ready", "/v2/models/other", f"{model}/versions/8"]
    replies, _ = probe(serving_env, bundle[0], [_get(p) for p in paths], tmp_path, model_name=NAME)
    status = dict(zip(paths, [r["status"] for r in replies], strict=True))
    body = dict(zip(paths, [json.loads(r["body"]) for r in replies], strict=True))
    assert list(status.values()) == [200] * 7 + [404, 404]
    _conforms(body["/v2"], "server")
    model = body[f"/v2/models/{NAME}"]
    _conforms(model, "model")
    assert model["name"] == NAME and model["versions"] == ["7"]
    inputs = {t["name"]: t["datatype"] for t in model["inputs"]}
    assert inputs["age"] == "FP64" and inputs["city"] == "BYTES" and len(inputs) == len(bundle[1][0])
    assert [o["name"] for o in model["outputs"]] == ["predictions", "probabilities"]
    assert body[f"/v2/models/{NAME}/versions/7"] == model
    _conforms(body["/v2/models/other"], "error")
    assert "this server serves 'financial-behavior-model'" in body["/v2/models/other"]["error"]
    assert "version '8' is not served here; version 7 is" in body[f"/v2/models/{NAME}/versions/8"]["error"]


def test_inference_answers_what_score_answers_in_either_tensor_layout(serving_env, bundle, records, tmp_path):
    log = tmp_path / "predictions.jsonl"
    requests = [
        post(records),
        _infer(inference_request(records, id="req-1")),
        _infer(inference_request(records, nested=True), path=f"/v2/models/{NAME}/versions/7/infer"),
        _infer(inference_request(records, outputs=[{"name": "probabilities"}])),
    ]
    replies, metrics = probe(
        serving_env, bundle[0], requests, tmp_path, model_name=NAME, prediction_log=str(log), log_sample_rate=1.0
    )
    assert [r["status"] for r in replies] == [200] * 4, [r["body"] for r in replies]
    score, flat, nested, only = (json.loads(r["body"]) for r in replies)
    for answer in (flat, nested, only):
        _conforms(answer, "inference_response")
    assert flat["model_name"] == NAME and flat["model_version"] == "7" and flat["id"] == "req-1"
    outputs = {o["name"]: o for o in flat["outputs"]}
    predictions = {"name": "predictions", "datatype": "INT64", "shape": [20], "data": score["predictions"]}
    assert outputs["predictions"] == predictions
    assert outputs["probabilities"]["data"] == score["probabilities"] and outputs["probabilities"]["datatype"] == "FP64"
    assert nested["outputs"] == flat["outputs"]
    assert [o["name"] for o in only["outputs"]] == ["probabilities"]
    assert 'fin_behavior_requests_total{endpoint="infer",status="200"} 3.0' in metrics

    sampled = [json.loads(line) for line in log.with_name("predictions.inputs.jsonl").read_text().splitlines()]
    assert len(sampled) == 4  # the monitor reads inference requests in the /score form, records and probabilities
    for entry in sampled[1:]:
        assert records_of(entry["request"]) == records and entry["response"]["probabilities"] == score["probabilities"]


def test_every_client_mistake_is_a_json_4xx_that_names_it(serving_env, bundle, records, tmp_path):
    good = inference_request(records[:2])
    without_city = {"inputs": [t for t in good["inputs"] if t["name"] != "city"]}

    def changed(name: str, **change) -> dict:
        return {"inputs": [t | change if t["name"] == name else t for t in good["inputs"]]}

    city_as_numbers = changed("city", datatype="FP64", data=[1, 2])
    age_as_text, short_shape, matrix = (
        changed("age", data=["a", "b"]),
        changed("age", shape=[3]),
        changed("age", shape=[1, 2]),
    )
    cases = {
        "no key": (_infer(good, key=False), 401, "API key"),
        "other model": (_infer(good, path="/v2/models/other/infer"), 404, "this server serves"),
        "other version": (_infer(good, path=f"/v2/models/{NAME}/versions/3/infer"), 404, "version '3' is not served"),
        "GET infer": ({"method": "GET", "path": f"/v2/models/{NAME}/infer"}, 405, "use POST"),
        "not JSON": (_infer("{"), 400, "not valid JSON"),
        "no inputs": (_infer({"inputs": []}), 422, '{"inputs"'),
        "records instead": (_infer(records[:2]), 422, '{"inputs"'),
        "missing feature": (_infer(without_city), 422, "missing field 'city'"),
        "unknown feature": (
            _infer({"inputs": [*good["inputs"], good["inputs"][0] | {"name": "x"}]}),
            422,
            "unknown field",
        ),
        "repeated feature": (_infer({"inputs": [*good["inputs"], good["inputs"][0]]}), 422, "sent twice"),
        "numbers for a category": (_infer(city_as_numbers), 422, "'city' must be a string"),
        "text for a number": (_infer(age_as_text), 422, "FP64 data must be numbers"),
        "shape vs data": (_infer(short_shape), 422, "needs 3 values, data holds 2"),
        "a matrix": (_infer(matrix), 422, "is not [N] or [N, 1]"),
        "odd datatype": (_infer({"inputs": [good["inputs"][0] | {"datatype": "COMPLEX"}]}), 422, "datatype"),
        "unknown output": (_infer(good | {"outputs": [{"name": "logits"}]}), 422, "no output named 'logits'"),
        "id not a string": (_infer(good | {"id": {"trace": 1}}), 422, "id must be a string"),
        "lone surrogate": (_infer(changed("city", data=["Austin", "\ud800"])), 422, "record 1: field 'city'"),
        "lone surrogate in the id": (_infer(good | {"id": "req-\udfff"}), 422, "id is not valid Unicode text"),
        "deep data": (
            _infer(
                '{"inputs": [{"name": "age", "shape": [1], "datatype": "FP64", "data": '
                + "[" * 5000
                + "]" * 5000
                + "}]}"
            ),
            400,
            "nested too deeply",
        ),
        "too many rows": (_infer(inference_request([records[0]] * 1001)), 413, "at most 1000"),
    }
    replies, _ = probe(serving_env, bundle[0], [request for request, _, _ in cases.values()], tmp_path, model_name=NAME)
    for (case, (_, status, words)), reply in zip(cases.items(), replies, strict=True):
        assert reply["headers"]["content-type"] == "application/json", case
        body = json.loads(reply["body"])
        _conforms(body, "error")
        assert (reply["status"], words in body["error"]) == (status, True), (case, reply)
