"""Fixtures: a real bundle built in the real local serving environment, and the scoring service started from it."""

from __future__ import annotations

import collections
import json
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import joblib
import pandas as pd
import pytest

from fin_behavior.data.columns import FEATURES
from fin_behavior.data.processing import ProcessedData, process_raw_file
from fin_behavior.deploy.local import free_port
from fin_behavior.deploy.lock import HOLDER_FILE
from fin_behavior.deploy.rollout import GateSettings, Release
from fin_behavior.environments import builder, compatible, verification
from fin_behavior.environments.spec import get_spec
from fin_behavior.ml.train import train
from fin_behavior.records import BundleFiles, ModelInfo, read_json
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import ENVS, fast_options

if TYPE_CHECKING:
    from fin_behavior.deploy.local import LocalTarget

FAST = {"n_iter": 1, "search_max_rows": 1_000, "n_estimators": [20, 30]}


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
def processed(banking_csv) -> ProcessedData:
    return process_raw_file(banking_csv, 0.95)


@pytest.fixture(scope="session")
def trained(processed, tmp_path_factory):
    """(trained inputs, dataset, hold-out ids): one small model shared by the local and the Azure bundles."""
    work = tmp_path_factory.mktemp("trained")
    dataset = processed.dataset
    options = fast_options(**FAST)
    model = train(dataset, options)
    joblib.dump(model.pipeline, work / "trained.joblib")
    from sklearn import __version__

    inputs = compatible.TrainedInputs(
        work / "trained.joblib", model.search.best_params, 42, __version__, "t", "d", 0.8, 0.5, options.features
    )
    return inputs, dataset, model.split.test_ids


def build_bundle(env, trained, work: Path, raw_inputs: pd.DataFrame | None = None) -> Path:
    inputs, dataset, test_ids = trained
    report = compatible.build_bundle(env, inputs, dataset, test_ids, work, raw_inputs)
    compatible.model_info(env, inputs, report, work / compatible.BUNDLE_DIR).write(work / compatible.BUNDLE_DIR)
    return work / compatible.BUNDLE_DIR


@pytest.fixture(scope="session")
def bundle(serving_env, trained, processed, tmp_path_factory) -> tuple[Path, list[dict], list[float]]:
    """(bundle dir, hold-out records, the joblib model's probabilities for them); the bundle takes raw records."""
    work = tmp_path_factory.mktemp("bundle")
    bundle_dir = build_bundle(serving_env, trained, work, processed.raw_inputs)
    _, dataset, test_ids = trained
    records = dataset[dataset["transaction_id"].isin(set(test_ids))][list(FEATURES)]
    proba = verification.read_report(work)["artifacts"][BundleFiles.MODEL]["proba"]
    return bundle_dir, records.to_dict("records"), proba


def start_service(
    env, bundle_dir: Path, workdir: Path, *extra: str, probe_key: str | None = None, other_keys: tuple[str, ...] = ()
) -> Service:
    """The service on a free port; `probe_key`: the platform's probe key in its keys file too; `other_keys`: other
    clients' keys beside the service's own."""
    key = secrets.token_urlsafe(24)
    keys = workdir / "keys.json"
    keys.write_text(json.dumps({"keys": [key, *other_keys]} | ({"probe_keys": [probe_key]} if probe_key else {})))
    port, log, predictions = free_port(), workdir / "service.log", workdir / "predictions.jsonl"
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


def served_version(target: LocalTarget) -> str:
    response = httpx.post(f"{target.url}/score", json=[], headers={"X-API-Key": target.key()})
    return response.headers["X-Model-Version"]  # a 422 for the empty list still names the version


class Load:
    """Clients scoring through the public URL on keep-alive connections until stopped.

    `quiet_until_rollout`: each client asks only once every QUIET_SECONDS until a rollout takes the endpoint (the
    holder file of its rollout lock is written: deploy/lock.py), then as fast as it can until stopped. What runs
    before a rollout (training, verifying) changes nothing at the URL, and full pressure through it, on two cores
    shared with the run itself, made a retrain take 92 s instead of 34 s; through the rollout the pressure is full,
    unless `interval` (seconds) is given: each client then asks again that long after its answer. The end-to-end
    tests use STEADY: each client's keep-alive connection stays in use through the switch and the drain, at a
    fraction of full pressure's requests (their load sent ~11,000 in 67 s of tests, mostly to wait for other
    processes on the same two cores); the rollout and supervision tests keep full pressure."""

    QUIET_SECONDS = 0.1
    STEADY = 0.02

    def __init__(
        self,
        target: LocalTarget,
        record: dict,
        clients: int = 6,
        quiet_until_rollout: bool = False,
        interval: float = 0.0,
    ):
        self.outcomes: collections.Counter = collections.Counter()
        self._interval = interval
        self._stop, self._full = threading.Event(), threading.Event()
        if not quiet_until_rollout:
            self._full.set()
        self._holder = target.root / HOLDER_FILE
        self._holder_before = _stamp(self._holder)
        self._threads = [threading.Thread(target=self._run, args=(target, record)) for _ in range(clients)]

    def _run(self, target: LocalTarget, record: dict) -> None:
        with httpx.Client(base_url=target.url, headers={"X-API-Key": target.key()}, timeout=10) as client:
            while not self._stop.is_set():
                if not self._full.is_set():
                    if _stamp(self._holder) != self._holder_before:
                        self._full.set()
                    else:
                        self._stop.wait(self.QUIET_SECONDS)
                try:
                    response = client.post("/score", json=record)
                    key = f"v{response.json()['model_version']}" if response.status_code == 200 else response.text
                except httpx.HTTPError as exc:
                    key = f"{type(exc).__name__}: {exc}"
                self.outcomes[key] += 1
                if self._interval and self._full.is_set():
                    self._stop.wait(self._interval)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    @property
    def failures(self) -> dict[str, int]:
        return {k: n for k, n in self.outcomes.items() if not k.startswith("v")}

    @property
    def saw_rollout(self) -> bool:
        """Whether the clients asked at full pressure (a quiet load stays quiet if no rollout took the endpoint)."""
        return self._full.is_set()


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def probe(env, bundle_dir: Path, requests: list[dict], workdir: Path, **settings) -> tuple[list[dict], str]:
    """The requests answered by the scoring service in process, inside the serving environment (see
    fin_behavior_tests/serving/asgi_probe.py); (replies, /metrics text)."""
    key = "k" * 32
    keys = workdir / "probe-keys.json"
    keys.write_text(json.dumps({"keys": [key]}))
    for request in requests:
        request.setdefault("headers", [])
        if request.pop("key", True):
            request["headers"] = [["X-API-Key", key], *request["headers"]]
    job = {
        "settings": {"bundle_dir": str(bundle_dir), "keys_file": str(keys), "model_version": "7"} | settings,
        "requests": requests,
        "metrics_headers": [["X-API-Key", key]],
    }
    done = subprocess.run(
        [str(env.python), "-m", "fin_behavior_tests.serving.asgi_probe"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the probe failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout)
    return out["replies"], out["metrics"]


def post(body, **extra) -> dict:
    """A POST /score for `probe`: `body` as JSON unless it is already text."""
    text = body if isinstance(body, str) else json.dumps(body)
    return {"method": "POST", "path": "/score", "body": text, **extra}


def gates(**overrides) -> GateSettings:
    """The gates of the settings, with a latency bar a local service on a busy test machine meets."""
    return GateSettings.from_settings(get_settings(), **({"max_latency_ms": 100.0, "latency_requests": 20} | overrides))


def release(bundle_dir: Path, version: str) -> Release:
    """As the deployer hands it over, but unverified: the service must refuse a bad bundle on its own."""
    return Release("m", version, bundle_dir, ModelInfo.read(bundle_dir), read_json(bundle_dir / "expected.json"))


def local_target(root: Path, **overrides) -> LocalTarget:
    """A local endpoint on a free port (drain shortened for tests), configured like the platform's."""
    from fin_behavior.deploy.local import LocalTarget

    settings = get_settings().with_overrides(**({"endpoint_port": free_port(), "drain_seconds": 2} | overrides))
    return LocalTarget(root, ENVS, settings)
