"""full_pipeline, then the data sensor's retrain, on two Celery workers that share nothing but the services:
Redis, Postgres (Dagster's storage), an MLflow tracking server and the artifact store. `make test-distributed`."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import pytest

from fin_behavior.data.generate import generate_csv
from fin_behavior_tests.distributed.cluster import BIN, ServicesUnavailable, check_machine, local_cluster
from fin_behavior_tests.helpers import FAST_TRAINING


def _why_not() -> str | None:
    if os.environ.get("FIN_BEHAVIOR_TEST_DISTRIBUTED") != "1":
        return "starts Redis, Postgres, an MLflow server and two Celery workers for minutes: `make test-distributed`"
    try:
        check_machine()
    except ServicesUnavailable as exc:
        return f"the services cannot start here: {exc}"
    return None


pytestmark = [pytest.mark.skipif(_why_not() is not None, reason=str(_why_not())), pytest.mark.timeout(1_800)]

SERVING_STEPS = {"live_deployment", "live_deployment_checks"}  # the steps on the endpoint host's queue
FAST = {f"FIN_BEHAVIOR_{name.upper()}": json.dumps(value) for name, value in FAST_TRAINING.items()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    raw = generate_csv(root / "input" / "transactions.csv")  # the mounted input every step reads
    try:
        with local_cluster(root, raw, FAST) as started:
            yield started
    except ServicesUnavailable as exc:
        pytest.skip(f"the services cannot start here: {exc}")


def _instance(cluster, who: str):
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(cluster.env_of(cluster.root / who)["DAGSTER_HOME"]))


def _workers_of_steps(instance, run_id: str) -> dict[str, str]:
    """Step key -> the worker (by name) that ran it, from dagster-celery's engine events."""
    import dagster as dg

    ran = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = record.dagster_event.engine_event_data.metadata
        if "Celery worker" in metadata:
            ran[record.step_key] = metadata["Celery worker"].value.split("@")[0]
    return ran


def _served_version(cluster) -> str:
    key = json.loads((cluster.workers["serving"].var_dir / "endpoint" / "keys.json").read_text())["keys"][0]
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.endpoint_port}/version", headers={"X-API-Key": key})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["model_version"])


def _production(cluster) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cluster.tracking_uri)
    return client.get_model_version_by_alias("financial-behavior-model", "production").version


def _check_placement(cluster, ran: dict[str, str]) -> None:
    assert {step for step, worker in ran.items() if worker == "serving"} == SERVING_STEPS, ran
    assert {"processed_dataset", "trained_model", "compatible_model", "registered_model_version"} <= {
        step for step, worker in ran.items() if worker == "compute"
    }, ran


def test_full_pipeline_runs_on_two_workers_that_share_no_disk(cluster):
    home = cluster.root / "shell"
    done = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "fin_behavior.definitions", "-j", "full_pipeline"],
        env=cluster.env_of(home), capture_output=True, text=True, timeout=1_200,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    instance = _instance(cluster, "shell")
    (run,) = instance.get_runs()
    assert run.status.value == "SUCCESS"
    _check_placement(cluster, _workers_of_steps(instance, run.run_id))
    # Each worker built what it needed from the store, the registry and the spec: the model's artifacts on
    # the compute worker, the release and the serving environment again on the serving host.
    compute, serving = cluster.workers["compute"].var_dir, cluster.workers["serving"].var_dir
    assert (compute / "artifacts" / "trained_model").is_dir() and not (serving / "artifacts" / "trained_model").exists()
    assert any((compute / "envs").iterdir()) and any((serving / "envs").iterdir())
    assert not (home / "var" / "artifacts").exists()  # the shell that started the run ran no step
    assert _production(cluster) == "1" == _served_version(cluster)


def test_the_data_sensor_retrains_through_the_same_workers(cluster):
    import dagster as dg

    raw = cluster.env["FIN_BEHAVIOR_RAW_DATA_PATH"]
    generate_csv(raw, seed=7)  # new data: the sensor's next tick requests `retrain`
    daemon = cluster.start(
        [str(BIN / "dagster-daemon"), "run", "-m", "fin_behavior.definitions"],
        cluster.root / "daemon.log", cluster.env_of(cluster.root / "daemon"),
    )  # fmt: skip
    instance = _instance(cluster, "daemon")
    deadline = time.monotonic() + 1_200
    runs: list = []
    while time.monotonic() < deadline and daemon.poll() is None:
        runs = instance.get_runs(dg.RunsFilter(job_name="retrain"))
        if runs and runs[0].is_finished:
            break
        time.sleep(5)
    assert runs and runs[0].is_finished, f"no finished retrain run; daemon log: {cluster.root / 'daemon.log'}"
    run = runs[0]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["fin_behavior/trigger"] == "data_version"
    _check_placement(cluster, _workers_of_steps(instance, run.run_id))
    assert _production(cluster) == "2" == _served_version(cluster)
