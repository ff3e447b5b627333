"""A real bundle built in the real local serving environment, and the scoring service started from it."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import pytest

from fin_behavior.data.columns import FEATURES
from fin_behavior.data.processing import process_raw_file
from fin_behavior.environments import builder, compatible
from fin_behavior.environments.spec import get_spec
from fin_behavior.ml.train import SearchSpace, TrainingOptions, train
from fin_behavior_tests.environments.test_compatible import ENVS

FAST = TrainingOptions(n_iter=1, cv=2, search_max_rows=1_000, space=SearchSpace(n_estimators=(20, 30)))


@dataclass
class Service:
    url: str
    key: str
    process: subprocess.Popen
    log: Path
    predictions: Path

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key if key is not None else self.key})


@pytest.fixture(scope="session")
def serving_env():
    return builder.build(get_spec("local"), ENVS)


@pytest.fixture(scope="session")
def bundle(serving_env, banking_csv, tmp_path_factory) -> tuple[Path, list[dict], list[float]]:
    """(bundle dir, hold-out records, the joblib model's probabilities for them)."""
    work = tmp_path_factory.mktemp("bundle")
    dataset = process_raw_file(banking_csv, 0.95).dataset
    model = train(dataset, FAST)
    joblib.dump(model.pipeline, work / "trained.joblib")
    from sklearn import __version__

    inputs = compatible.TrainedInputs(work / "trained.joblib", model.search.best_params, 42, __version__, "t", "d", 0.8)
    report = compatible.build_bundle(serving_env, inputs, dataset, model.split.test_ids, work)
    compatible.write_model_info(compatible.model_info(serving_env, inputs, report, work / "bundle"), work / "bundle")
    records = dataset[dataset["transaction_id"].isin(set(model.split.test_ids))][list(FEATURES)]
    return work / "bundle", records.to_dict("records"), report["artifacts"]["model.joblib"]["proba"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(env, bundle_dir: Path, workdir: Path, *extra: str) -> Service:
    key = secrets.token_urlsafe(24)
    keys = workdir / "keys.json"
    keys.write_text(json.dumps({"keys": [key]}))
    port, log, predictions = _free_port(), workdir / "service.log", workdir / "predictions.jsonl"
    process = subprocess.Popen(
        [
            str(env.python),
            "-m",
            "fin_behavior.serving.app",
            "--bundle",
            str(bundle_dir),
            "--keys-file",
            str(keys),
            "--model-version",
            "7",
            "--port",
            str(port),
            "--prediction-log",
            str(predictions),
            *extra,
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Service(url, key, process, log, predictions)
        except httpx.TransportError:
            time.sleep(0.1)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"service did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def service(serving_env, bundle, tmp_path_factory) -> Iterator[Service]:
    running = start_service(serving_env, bundle[0], tmp_path_factory.mktemp("service"))
    yield running
    running.process.terminate()
    running.process.wait(timeout=10)


@pytest.fixture
def tampered_bundle(bundle, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle[0], copy)
    onnx = copy / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10])  # truncated
    return copy
