"""score.py for Azure ML online deployments (copied next to the fin_behavior package by azure.py).

The azureml-inference-server-http contract: `init()` once per worker, `run(raw)` per request. It serves the
registered bundle with the same checks and messages as the local service: the bundle is verified as a whole
(every file listed and matching, the manifest matching the digest the deployment names) before loading, and
a client mistake gets a 4xx naming the field, never a 500. Every answer carries `request_id` (and the server's
X-Request-ID header the same id): a client's own X-Request-ID when it keeps serving/request_ids.py's rule, else
the server's own id for the request.
"""

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from azureml_inference_server_http.api.aml_response import AMLResponse

from fin_behavior.serving.bundle import load_bundle
from fin_behavior.serving.prediction_log import log_lines
from fin_behavior.serving.request_ids import request_id_for
from fin_behavior.serving.scoring import score_request
from fin_behavior.serving.validation import InputError

MAX_ROWS = int(os.environ.get("FIN_BEHAVIOR_MAX_ROWS", "1000"))
SAMPLE_RATE = float(os.environ.get("FIN_BEHAVIOR_LOG_SAMPLE_RATE", "1.0"))
log = logging.getLogger("fin_behavior.serving.azure")
_state: dict[str, Any] = {}  # bundle, version, collectors: set by init()


def init():
    # AZUREML_MODEL_DIR holds the registered model's folder; a refused bundle fails the deployment's start,
    # with the reason in its logs (which the rollout puts in the run's failure).
    root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
    info = next(root.rglob("model_info.json"), None)
    if info is None:
        raise RuntimeError(f"no model_info.json under AZUREML_MODEL_DIR={root}; is the registered model a bundle?")
    _state["bundle"] = load_bundle(info.parent, os.environ.get("FIN_BEHAVIOR_BUNDLE_DIGEST"))
    _state["version"] = os.environ.get("FIN_BEHAVIOR_MODEL_VERSION", "unknown")
    _state["collectors"] = _collectors()
    log.info("serving model version %s from %s", _state["version"], info.parent)


def _collectors():
    """Azure ML's model data collection (the deployment enables it), when its package is in the environment."""
    try:
        from azureml.ai.monitoring import Collector

        def quiet(error):
            log.warning("model data collection: %s", error)

        return Collector(name="model_inputs", on_error=quiet), Collector(name="model_outputs", on_error=quiet)
    except Exception as exc:  # collection is an extra: scoring never depends on it
        log.info("model data collection is off: %s", exc)
        return None


def _request_id() -> tuple[str, str | None]:
    """(this request's id, why the client's was refused or None). The inference server takes the client's
    X-Request-ID (or makes a uuid4) into flask's `g.request_id` and answers it in its X-Request-ID header after
    run(); the id kept here is written back there, so the header and the body always agree."""
    try:
        from flask import g

        offered = str(g.get("request_id", ""))
    except (ImportError, RuntimeError):  # run() called outside a request of the inference server
        return request_id_for(None)
    request_id, refused = request_id_for(offered)
    g.request_id = request_id
    return request_id, refused


def run(raw):
    started = time.perf_counter()
    body = raw.encode() if isinstance(raw, str) else raw
    version = _state["version"]
    request_id, refused = _request_id()
    try:
        if refused:
            raise InputError(400, refused)
        scored = score_request(_state["bundle"], body, MAX_ROWS, version)
        reply, status, rows, unknown = scored.answer, 200, scored.rows, scored.unknown
    except InputError as exc:
        reply, status, rows, unknown = {"error": exc.message, "model_version": version}, exc.status, 0, {}
    reply["request_id"] = request_id
    answer = json.dumps(reply, separators=(",", ":")).encode()
    # The local service's prediction log lines, on stdout: the monitor reads them from the exported logs.
    elapsed = time.perf_counter() - started
    lines = log_lines(
        json.dumps(version).encode(), elapsed, status, rows, body, unknown, answer, SAMPLE_RATE, request_id
    )
    sys.stdout.buffer.write(b"".join(line for line in lines if line))
    sys.stdout.flush()
    if status == 200 and _state.get("collectors"):
        _collect(body, reply)
    return reply if status == 200 else AMLResponse(reply, status, json_str=True)


def _collect(body: bytes, reply: dict) -> None:
    import pandas as pd

    from fin_behavior.serving.validation import decode, records_of

    inputs, outputs = _state["collectors"]
    try:
        context = inputs.collect(pd.DataFrame(records_of(decode(body))))
        outputs.collect(pd.DataFrame({k: reply[k] for k in ("predictions", "probabilities")}), context)
    except Exception as exc:  # collection is an extra: scoring never depends on it
        log.warning("model data collection failed: %s", exc)
