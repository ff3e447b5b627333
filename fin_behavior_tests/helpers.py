"""Small builders the tests share."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg

from fin_behavior.deploy.rollout import GateSettings
from fin_behavior.ml.train import TrainingOptions
from fin_behavior.records import Evidence, Verdict
from fin_behavior.settings import get_settings

# Serving environments built by the tests, cached across runs (FIN_BEHAVIOR_TEST_ENVS to move them).
CLI = [sys.executable, "-m", "fin_behavior.cli"]  # the `fin-behavior` command, as a process of its own
ENVS = Path(os.environ.get("FIN_BEHAVIOR_TEST_ENVS", Path(__file__).resolve().parents[1] / "var" / "test-envs"))
# A small search: seconds instead of the default's ~20 s.
FAST_TRAINING = {"n_iter": 2, "cv": 2, "search_max_rows": 1_500, "n_estimators": [10, 30]}


# The snapshot of the code location (test_definitions.py, test_webserver.py): a rename is a visible diff here.
EXPECTED_ASSETS = {
    "raw_transactions",
    "ground_truth",
    "processed_dataset",
    "trained_model",
    "training_environment",
    "serving_environment",
    "compatible_model",
    "registered_model_version",
    "live_deployment",
    "serving_traffic",
    "serving_quality",
    "realized_performance",
    "challenger_comparison",
    "submitted_model",
    "serving_image",
    "batch_scores",
}
EXPECTED_JOBS = {
    "full_pipeline",
    "retrain",
    "rebuild_compatible",
    "deploy",
    "rollback",
    "monitor",
    "compare_challenger",
    "submission",
    "build_image",
    "score_batch",
}


# Gates that a test's fake or local target passes in a moment: three latency requests, no traffic steps or waits.
QUICK_GATES = GateSettings(
    max_latency_ms=1_000.0,
    parity_tolerance=1e-4,
    latency_requests=3,
    traffic_steps=(),
    step_seconds=0,
    confirm_seconds=0,
)


def dagster_instance() -> dg.DagsterInstance:
    """A Dagster instance in memory (runs, events, data versions: what the tests read of one), its steps' output
    not captured to files. `instance_for_test`'s SQLite files and the `tail` process pair it starts per run cost
    about half a second a run; the jobs and their events are the same."""
    return dg.DagsterInstance.ephemeral()


def local_registry(tmp_path: Path, experiment: str):
    """A real MLflow tracking store and model registry under tmp_path, made current: runs started now log there."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(experiment, (tmp_path / "art").as_uri()))
    return mlflow.MlflowClient(tracking_uri=uri)


def fast_options(**overrides: Any) -> TrainingOptions:
    return TrainingOptions.from_settings(get_settings().with_overrides(**(FAST_TRAINING | overrides)))


def evidence(stage: str, version: str, passed: bool = True) -> Evidence:
    """One blocking verdict, passed or failed."""
    return Evidence(stage, version, [Verdict("gate", True, passed, 1.0 if passed else 0.1, 0.5, "as set by the test")])


webhook_bodies: list[dict] = []  # what the receiver below was sent


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        webhook_bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_) -> None:
        pass


@contextlib.contextmanager
def webhook_receiver() -> Iterator[str]:
    """A real HTTP receiver on loopback for alert webhooks; what it receives lands in `webhook_bodies`."""
    webhook_bodies.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


def running_with(marker: str, within: float = 5) -> list[int]:
    """Pids of live processes (not zombies) whose command line holds `marker`, once none is left or after
    `within` seconds (a killed process takes a moment to go)."""

    def running() -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                alive = stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie waits only to be reaped
                if alive and marker.encode() in stat.with_name("cmdline").read_bytes():
                    found.append(int(stat.parent.name))
        return found

    deadline = time.monotonic() + within
    while (found := running()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def known_answers(expected: dict[str, Any]) -> dict[str, float]:
    """A bundle's expected.json as a fake endpoint answers it: each known record, and its raw twin in the bank's
    layout (`raw_records`), by its canonical JSON -> the probability verified for it."""
    return {
        json.dumps(record, sort_keys=True): probability
        for shape in ("records", "raw_records")
        for record, probability in zip(expected.get(shape, []), expected["probabilities"], strict=False)
    }
