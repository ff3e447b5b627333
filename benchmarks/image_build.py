"""Serving image: build time (cold and warm), size, reproducibility, and `mlflow models build-docker` beside it.

    make demo && make docker-engine && .venv/bin/fin-behavior image base
    .venv/bin/python benchmarks/image_build.py

On the production version of the project's state (what `make demo` made):
  cold   no image of this serving environment in the engine: both layers built (packages, then code + model)
  warm   another version of the same environment (its bundle differs by one file): only the second layer
  again  the cold build repeated from a context made elsewhere: its layers must be the same bytes
and, on the cold image running as a cluster runs it (image.running): the time from `docker run` to /ready 200,
the first POST /explain of one bank record (it starts the explanation worker, which imports shap), and the
resident memory (RSS, `docker top`) of the scoring process and of the explanation worker after it; then
`mlflow models build-docker` of the same trained model, timed until it ends (it needs a base image from a public
registry, which this machine cannot reach: its error is reported).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from mlflow import MlflowClient

from fin_behavior.deploy import deployer, image
from fin_behavior.deploy.local import free_port
from fin_behavior.ml import registry
from fin_behavior.records import BundleFiles, ModelInfo, read_json, sha256_file, write_json
from fin_behavior.settings import get_settings


def layers(tag: str) -> list[str]:
    return json.loads(image.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", tag))


def forget(*tags: str) -> None:
    """Remove the images and their dangling layers: the next build of them is cold."""
    for tag in tags:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)


def another_version(release, work: Path):
    """The same model and environment with one changed file: a new version's app layer, the same packages."""
    bundle = work / "bundle-next"
    shutil.copytree(release.bundle, bundle)
    expected = bundle / BundleFiles.EXPECTED
    write_json(expected, read_json(expected) | {"note": "another version"})
    info = ModelInfo.read(bundle)
    ModelInfo(**{**info.__dict__, "sha256": info.sha256 | {BundleFiles.EXPECTED: sha256_file(expected)}}).write(bundle)
    return deployer.load_release(release.model_name, f"{release.version}9", bundle)


def mlflow_build_docker(client: MlflowClient, tracking_uri: str, release) -> tuple[float, str]:
    source_run = client.get_model_version(release.model_name, release.version).tags["trained_model_mlflow_run_id"]
    started = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "models", "build-docker", "-m", f"runs:/{source_run}/model",
         "-n", "mlflow-build-docker-bench"],
        capture_output=True, text=True, timeout=1_800, env=os.environ | {"MLFLOW_TRACKING_URI": tracking_uri},
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode == 0:
        return seconds, "built"
    lines = (done.stdout + done.stderr).strip().splitlines()
    base = next((line.split(" : ", 1)[1] for line in lines if " : FROM " in line), "its base image")
    why = next((line for line in lines if "no such host" in line or "denied" in line), lines[-1] if lines else "")
    return seconds, f"failed at {base}: {why}"


def resident_mb(container: str) -> dict[str, float]:
    """RSS in MB of the container's scoring process and explanation worker (their command lines tell them apart)."""
    rows = image.docker("top", container, "-o", "pid,rss,args", timeout=60).splitlines()[1:]  # it needs the pid
    found: dict[str, float] = {}
    for row in rows:
        _, rss, args = row.split(None, 2)
        role = "scoring" if "fin_behavior.serving.app" in args else "worker" if "spawn_main" in args else None
        if role:
            found[role] = int(rss) / 1024
    return found


def run_figures(tag: str, release) -> tuple[float, float, dict[str, float]]:
    """(seconds from `docker run` to ready, seconds of the first explanation, RSS after it)."""
    key = secrets.token_urlsafe(32)
    record = (release.expected.get("raw_records") or release.expected["records"])[:1]
    started = time.perf_counter()
    with image.running(tag, json.dumps({"keys": [key]}), free_port()) as container:
        ready = time.perf_counter() - started
        started = time.perf_counter()
        answer = httpx.post(f"{container.url}/explain", json=record, headers={"X-API-Key": key}, timeout=120)
        answer.raise_for_status()
        explained = time.perf_counter() - started
        return ready, explained, resident_mb(container.id)


def main() -> None:
    settings = get_settings()
    if why := image.engine_available():
        sys.exit(why)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    name = settings.registered_model_name
    version = registry.alias_version(client, name, registry.PRODUCTION)
    if version is None:
        sys.exit("nothing in production: run `make demo` first")
    release = deployer.fetch_release(client, name, version, deployer.releases_dir(settings))
    envs = settings.envs_dir or settings.var_dir / "envs"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nxt = another_version(release, work)
        tags = (image.tag_for(name, release.version), image.tag_for(name, nxt.version))
        forget(*tags)
        cold = image.build(release, envs, work / "a", settings.image_base, log=lambda _: None)
        ready, explained, memory = run_figures(cold.tag, release)
        warm = image.build(nxt, envs, work / "b", settings.image_base, log=lambda _: None)
        first = layers(cold.tag)
        forget(*tags)
        again = image.build(release, envs, work / "elsewhere" / "c", settings.image_base, log=lambda _: None)
        same = layers(again.tag) == first
        forget(*tags)
        base_mb = int(image.docker("image", "inspect", "--format", "{{.Size}}", settings.image_base)) / 1e6
        mlflow_seconds, mlflow_outcome = mlflow_build_docker(client, settings.tracking_uri, release)
    print(f"image of {name} v{release.version}: {cold.size_bytes / 1e6:.0f} MB (base {base_mb:.0f} MB)")
    for what, built in (("cold", cold), ("warm", warm), ("again cold", again)):
        print(
            f"{what:<11} {built.seconds:6.1f} s (context {built.context_seconds:.1f} s, docker build "
            f"{built.seconds - built.context_seconds:.1f} s)"
        )
    print(f"the repeated cold build's layers are the first one's, byte for byte: {same}")
    print(f"docker run to ready: {ready:.1f} s; first explanation (worker start included): {explained:.1f} s")
    print(f"RSS after it: scoring process {memory.get('scoring', 0):.0f} MB, worker {memory.get('worker', 0):.0f} MB")
    print(f"mlflow models build-docker: {mlflow_seconds:.1f} s, {mlflow_outcome}")


if __name__ == "__main__":
    main()
