"""score.py for Azure ML online deployments (copied next to the fin_behavior package by azure.py).

The azureml-inference-server-http contract: `init()` once per worker, `run(raw)` per request. It serves the
registered bundle with the same checks and messages as the local service: the bundle is verified as a whole
(every file listed and matching, the manifest matching the digest the deployment names) before loading, and
a client mistake gets a 4xx naming the field, never a 500.
"""

import logging
import os
from pathlib import Path

from azureml_inference_server_http.api.aml_response import AMLResponse

from fin_behavior.serving.bundle import load_bundle
from fin_behavior.serving.scoring import score_request
from fin_behavior.serving.validation import InputError

MAX_ROWS = int(os.environ.get("FIN_BEHAVIOR_MAX_ROWS", "1000"))
log = logging.getLogger("fin_behavior.serving.azure")
_state = {}


def init():
    # AZUREML_MODEL_DIR holds the registered model's folder; a refused bundle fails the deployment's start,
    # with the reason in its logs (which the rollout puts in the run's failure).
    root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
    info = next(root.rglob("model_info.json"), None)
    if info is None:
        raise RuntimeError(f"no model_info.json under AZUREML_MODEL_DIR={root}; is the registered model a bundle?")
    _state["bundle"] = load_bundle(info.parent, os.environ.get("FIN_BEHAVIOR_BUNDLE_DIGEST"))
    _state["version"] = os.environ.get("FIN_BEHAVIOR_MODEL_VERSION", "unknown")
    log.info("serving model version %s from %s", _state["version"], info.parent)


def run(raw):
    try:
        return score_request(_state["bundle"], raw, MAX_ROWS, _state["version"]).answer
    except InputError as exc:
        return AMLResponse({"error": exc.message, "model_version": _state["version"]}, exc.status, json_str=True)
