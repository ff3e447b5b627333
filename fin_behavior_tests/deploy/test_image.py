"""The serving image. Without a Docker engine: the generated build context is the same bytes for the same
release wherever it is made, holds exactly the verified environment's pins, the serving code and the bundle, and
no key. With one (`make test-image` starts it; skipped here with the reason when none answers): the image built,
run read-only as a cluster runs it, scores exactly like the local service (the bank's raw records too), explains
posted records exactly like it (its explanation worker, shap, runs in the image), names every answer's request, says
why a decision cannot be explained by its id there (its log is standard output) and passes the deployment's gates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import fin_behavior
from fin_behavior.data.columns import RAW_COLUMNS
from fin_behavior.deploy import image
from fin_behavior.deploy.local import free_port
from fin_behavior.deploy.rollout import GateSettings
from fin_behavior.environments.builder import built_path, built_resolution
from fin_behavior.monitoring.collect import write_split
from fin_behavior.serving.bundle import verify_bundle
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import ENVS
from fin_behavior_tests.serving_fixtures import release

BASE = "fin-behavior/python:3.11-bookworm"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def context(serving_env, bundle, tmp_path_factory):
    made = release(bundle[0], "7")
    out = tmp_path_factory.mktemp("context") / "image"
    return made, out, image.write_context(made, ENVS, out, BASE)


def test_the_same_release_gives_the_same_context_wherever_it_is_made(context, tmp_path, monkeypatch):
    made, out, digest = context
    # compiled afresh here (a cache of its own); the first context's bytecode came from the user's cache
    monkeypatch.setenv("FIN_BEHAVIOR_BYTECODE_CACHE_DIR", str(tmp_path / "own-cache"))
    get_settings.cache_clear()
    again = image.write_context(made, ENVS, tmp_path / "somewhere" / "else", BASE)
    assert again == digest and len(list((tmp_path / "own-cache").rglob("*.pyc"))) > 1_000
    dockerfile = (out / "Dockerfile").read_text()
    assert (tmp_path / "somewhere" / "else" / "Dockerfile").read_text() == dockerfile
    assert f'io.fin-behavior.context-digest="{digest}"' in dockerfile
    assert f'io.fin-behavior.bundle-digest="{made.info.digest}"' in dockerfile
    assert f'io.fin-behavior.environment-fingerprint="{made.info.environment_fingerprint}"' in dockerfile
    assert "\nUSER 10001:10001\n" in dockerfile and "\nHEALTHCHECK " in dockerfile and "/health" in dockerfile
    assert f'"--bundle-digest", "{made.info.digest}"' in dockerfile  # the service refuses any other manifest


def test_the_context_holds_the_verified_pins_the_serving_code_the_bundle_and_no_key(context, serving_env):
    made, out, _ = context
    _, pins = built_resolution(built_path(ENVS, made.info.serving_environment, made.info.environment_fingerprint))
    dist_info = (
        p.name.removesuffix(".dist-info").rsplit("-", 1)
        for p in (out / "packages" / image.SITE_PACKAGES.lstrip("/")).glob("*.dist-info")
    )
    installed = {_canonical(name): version for name, version in dist_info}
    assert installed == {_canonical(p.split("==")[0]): p.split("==")[1] for p in pins}
    home = out / "app" / image.HOME.lstrip("/")
    code = home / "code" / "fin_behavior"
    assert (code / "serving" / "app.py").is_file() and (code / "records.py").is_file()
    assert not any((code / part).exists() for part in ("defs", "deploy", "ml", "submissions", "serving/azure_score.py"))
    assert verify_bundle(home / "model", made.info.digest) == made.info
    assert not list(out.rglob("keys.json"))
    pyc = next((code / "serving" / "__pycache__").glob("app.*.pyc")).read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, source not checked (PEP 552): valid at any mtime
    # the serving code needs nothing from the package beyond what the image holds
    probe = (  # without the checkout the serving environment's .pth file adds: only the context's code
        "import sys; sys.path = [p for p in sys.path if p != sys.argv[2]]; sys.path.insert(0, sys.argv[1]); "
        "import fin_behavior.serving.app as app; print(app.__file__)"
    )
    checkout = str(Path(fin_behavior.__file__).resolve().parents[1])
    done = subprocess.run(
        [str(serving_env.python), "-c", probe, str(code.parent), checkout], capture_output=True, text=True, cwd="/"
    )
    assert done.returncode == 0 and done.stdout.startswith(str(code)), done.stderr[-2000:]


def _why_no_docker() -> str | None:
    if os.environ.get("FIN_BEHAVIOR_TEST_DOCKER") != "1":
        return "builds and runs a Docker image (minutes): `make test-image`, which starts an engine and the base"
    if why := image.engine_available():
        return f"no Docker engine: {why}"
    return None if image.image_id(BASE) else f"the base image {BASE} is not there (`fin-behavior image base`)"


needs_docker = pytest.mark.skipif(_why_no_docker() is not None, reason=str(_why_no_docker()))


@needs_docker
def test_the_image_scores_and_explains_exactly_like_the_local_service_and_passes_the_gates(bundle, service, tmp_path):
    made = release(bundle[0], "7")
    built = image.build(made, ENVS, tmp_path, BASE, log=lambda _: None)
    try:
        config = json.loads(image.docker("image", "inspect", "--format", "{{json .Config}}", built.tag))
        assert config["User"] == "10001:10001" and "/health" in " ".join(config["Healthcheck"]["Test"])
        labels = config["Labels"]
        assert labels["io.fin-behavior.model-version"] == "7"
        assert labels["io.fin-behavior.bundle-digest"] == made.info.digest
        assert labels["io.fin-behavior.context-digest"] == built.context_digest
        no_compiler = image.docker(
            "run", "--rm", "--entrypoint", "sh", built.tag, "-c", "command -v gcc cc pip || true"
        )
        assert no_compiler == ""

        records = bundle[1][:200]
        # the bank's own records, every column of the Kaggle layout (the non-inputs too: they are ignored)
        raw = [{name: twin.get(name, "x") for name in RAW_COLUMNS} for twin in made.expected["raw_records"][:5]]
        key = "k" * 32
        with image.running(built.tag, json.dumps({"keys": [key]}), free_port()) as container:
            same = {"X-Request-ID": "image-and-local"}
            from_image = httpx.post(
                f"{container.url}/score", json=records, headers={"X-API-Key": key} | same, timeout=30
            )
            refused = httpx.post(f"{container.url}/score", json=records, timeout=30)
            time.sleep(1)  # the prediction log is written every 0.5 s: to standard output, in the image
            # both requests (the refused one too), the scored one with its inputs
            assert write_split(container.logs(), tmp_path / "collected", "pod") == (2, 1, 0)
            with httpx.Client(base_url=container.url, headers={"X-API-Key": key}) as client:
                in_image = _raw_and_explained(client, raw)
            # its prediction log is standard output, which the explanation worker cannot read back
            by_id = httpx.get(f"{container.url}/explain/image-and-local", headers={"X-API-Key": key}, timeout=30)
        with service.client() as local:
            from_local = local.post("/score", json=records, headers=same)
            assert in_image == _raw_and_explained(local, raw)
        assert from_image.status_code == 200 and from_image.json() == from_local.json()
        assert from_image.headers["X-Request-ID"] == from_image.json()["request_id"] == "image-and-local"
        assert refused.status_code == 401 and refused.json()["request_id"] == refused.headers["X-Request-ID"]
        assert by_id.status_code == 404 and "POST /explain with the records instead" in by_id.json()["error"]
        assert by_id.json()["request_id"] == by_id.headers["X-Request-ID"] == "image-and-local"

        gates = GateSettings.from_settings(get_settings(), max_latency_ms=100.0, latency_requests=20)
        outcomes = image.gate(built.tag, made, gates, free_port())
        assert all(o.passed for o in outcomes.values()), outcomes
    finally:
        image.docker("rmi", "-f", built.tag)


def _raw_and_explained(client: httpx.Client, raw: list[dict]) -> tuple[dict, dict]:
    """The raw records' /score answer and their POST /explain answer (the first explanation starts the worker)."""
    scored = client.post("/score", json=raw, headers={"X-Request-ID": "raw-records"}, timeout=30)
    explained = client.post("/explain", json=raw, headers={"X-Request-ID": "explained"}, timeout=120)
    assert scored.status_code == 200 and len(scored.json()["probabilities"]) == len(raw), scored.text
    assert "Transaction Amount" in scored.json()["ignored_columns"]
    assert explained.status_code == 200 and explained.json()["request_id"] == "explained", explained.text
    rows = explained.json()["rows"]
    assert [row["probability"] for row in rows] == scored.json()["probabilities"]
    for row in rows:  # exact tree SHAP: the contributions add up to the probability answered (float32 ONNX, 6 dp)
        assert abs(row["base_value"] + sum(row["contributions"].values()) - row["probability"]) < 1e-5
    return scored.json(), explained.json()
