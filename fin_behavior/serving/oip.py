"""The Open Inference Protocol (KServe v2) over the same model, so KServe and Seldon tooling can call it:

    GET  /v2                                      server metadata
    GET  /v2/health/live, /v2/health/ready        200 when true, 503 (not ready) when false
    GET  /v2/models/{name}[/versions/{v}]         model metadata: one input tensor per feature
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer   key required, like /score

An inference request carries one tensor per feature, `{"name": "age", "shape": [N] or [N, 1], "datatype":
"FP64", "data": [...]}` (numbers as FP*, INT*, UINT*; categories as BYTES strings), so a row is a record. The
tensors become records and go through the same validation and the same model as POST /score; the answer holds
the `predictions` tensor (and `probabilities` where the model gives them), or only those named in `outputs`.
Errors are `{"error": "..."}` with a 4xx, as the protocol says."""

from __future__ import annotations

import json
import re
from typing import Any

from fin_behavior.records import FeatureSpec
from fin_behavior.serving.bundle import Bundle
from fin_behavior.serving.scoring import Scored, score_records
from fin_behavior.serving.validation import InputError, decode, is_text, not_text

PROTOCOL_VERSION = "2"
INFER_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
NUMERIC_TYPES = frozenset(
    ["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
)
_NAME_SHOWN = 64


def unknown_model(name: str, version: str | None, served: str, served_version: str) -> str | None:
    """Why `name` (and `version`) is not what this server serves, or None when it is."""
    if name != served:
        return f"no model named {name[:_NAME_SHOWN]!r} here; this server serves {served!r}"
    if version is not None and version != served_version:
        return f"{served!r} version {version[:_NAME_SHOWN]!r} is not served here; version {served_version} is"
    return None


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "fin_behavior", "version": version, "extensions": []}


def model_metadata(name: str, version: str, features: list[FeatureSpec], probabilities: bool) -> dict[str, Any]:
    outputs = [{"name": "predictions", "datatype": "INT64" if probabilities else "FP64", "shape": [-1]}]
    if probabilities:
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1]})
    return {
        "name": name,
        "versions": [version],
        "platform": "fin_behavior",
        "inputs": [
            {"name": f.name, "datatype": "FP64" if f.dtype == "float" else "BYTES", "shape": [-1, 1]} for f in features
        ],
        "outputs": outputs,
    }


def _flat(data: Any) -> list[Any]:
    """Tensor data as the protocol allows it: flat (row-major) or nested to the shape."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative: a deeply nested array is a client's mistake, not a RecursionError
        item = next(stack[-1], StopIteration)
        if item is StopIteration:
            stack.pop()
        elif isinstance(item, list):
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


def _tensor_values(index: int, tensor: Any) -> tuple[str, list[Any]]:
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise InputError(422, f"{where} must be a tensor object with name, shape, datatype and data")
    name, shape, datatype, data = (tensor.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str):
        raise InputError(422, f"{where}.name must be a string (the feature's name)")
    where = f"input {name[:_NAME_SHOWN]!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InputError(422, f"{where}: shape must be a list of integers, e.g. [3] or [3, 1]")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] < 0:
        raise InputError(422, f"{where}: shape {shape} is not [N] or [N, 1]; send one tensor per feature")
    if datatype != "BYTES" and datatype not in NUMERIC_TYPES:
        raise InputError(422, f"{where}: datatype {str(datatype)[:20]!r} is not one of BYTES, FP64, FP32, INT64, ...")
    values = _flat(data)
    if len(values) != shape[0]:
        raise InputError(422, f"{where}: shape {shape} needs {shape[0]} values, data holds {len(values)}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise InputError(422, f"{where}: BYTES data must be strings")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise InputError(422, f"{where}: {datatype} data must be numbers")
    return name, values


def records_of_request(body: Any, max_rows: int) -> tuple[list[dict[str, Any]], list[str] | None, Any]:
    """(records, the output names asked for or None for all, the request id) of an inference request."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise InputError(422, 'an inference request is {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    columns: dict[str, list[Any]] = {}
    for index, tensor in enumerate(body["inputs"]):
        name, values = _tensor_values(index, tensor)
        if name in columns:
            raise InputError(422, f"input {name[:_NAME_SHOWN]!r} is sent twice")
        columns[name] = values
    rows = {len(values) for values in columns.values()}
    if len(rows) != 1:
        raise InputError(422, f"the input tensors hold different numbers of rows: {sorted(rows)[:4]}")
    count = rows.pop()
    if count > max_rows:
        raise InputError(413, f"{count} rows in one request; at most {max_rows} (split the batch)")
    outputs = body.get("outputs")
    wanted: list[Any] | None = None  # the names asked for: strings, once checked below
    if outputs is not None:
        wanted = [o.get("name") if isinstance(o, dict) else None for o in outputs] if isinstance(outputs, list) else []
        if not wanted or not all(isinstance(n, str) for n in wanted):
            raise InputError(422, 'outputs must be a list of {"name": ...}')
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(422, "id must be a string (the answer carries it back)")
    if request_id is not None and not is_text(request_id):
        raise not_text("id")
    records = [{name: values[i] for name, values in columns.items()} for i in range(count)]
    return records, wanted, request_id


def _output(name: str, values: list[Any]) -> dict[str, Any]:
    integral = all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in values)
    datatype = "INT64" if name == "predictions" and integral else "FP64"
    data = [int(v) for v in values] if datatype == "INT64" else [float(v) for v in values]
    return {"name": name, "datatype": datatype, "shape": [len(values)], "data": data}


def infer(bundle: Bundle, raw: bytes, max_rows: int, name: str, model_version: str) -> Scored:
    """An inference request answered by the model; the Scored carries the /score form of the request and the
    answer too, for the prediction log (the monitor reads one form)."""
    records, wanted, request_id = records_of_request(decode(raw), max_rows)
    scored = score_records(bundle, records, max_rows, model_version)
    available: dict[str, Any] = {k: scored.answer[k] for k in ("predictions", "probabilities") if k in scored.answer}
    unknown = [n for n in wanted or () if n not in available]
    if unknown:
        raise InputError(422, f"no output named {unknown[0][:_NAME_SHOWN]!r}; outputs: {', '.join(available)}")
    outputs = [_output(n, available[n]) for n in (wanted or available)]
    answer: dict[str, Any] = {"model_name": name, "model_version": model_version, "outputs": outputs}
    if isinstance(request_id, str):
        answer["id"] = request_id
    if "unknown_categories" in scored.answer:
        answer["parameters"] = {"unknown_categories": json.dumps(scored.answer["unknown_categories"])}
    return Scored(
        answer,
        scored.rows,
        scored.unknown,
        logged_request=json.dumps(records, separators=(",", ":")).encode(),
        logged_answer=json.dumps(scored.answer, separators=(",", ":")).encode(),
    )
