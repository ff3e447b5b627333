"""The code location loads quickly, every job resolves, and renames show up as a visible diff."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from fin_behavior.definitions import defs
from fin_behavior_tests.helpers import EXPECTED_ASSETS, EXPECTED_JOBS


def test_definitions_load_and_every_job_resolves():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {job.name for job in repo.get_all_jobs() if not job.name.startswith("__")} == EXPECTED_JOBS
    for name in EXPECTED_JOBS:
        defs.resolve_job_def(name)


def test_asset_keys_snapshot():
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == EXPECTED_ASSETS


def test_loading_definitions_does_not_import_heavy_libraries():
    code = (
        "import sys, fin_behavior.definitions;"
        "print(','.join(m for m in ('mlflow', 'azure.ai.ml', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_package_root_does_not_import_dagster():
    code = "import sys, fin_behavior; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _loaded_with(**env: str) -> dict:
    """The full_pipeline executor and each node's Celery queue tag, from a code location loaded with `env`."""
    code = (
        "import json; from fin_behavior.definitions import defs; job = defs.resolve_job_def('full_pipeline');"
        "print(json.dumps({'executor': job.executor_def.name, 'queues': {n.name: n.tags.get('dagster-celery/queue')"
        " for n in job.graph.node_defs}}))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True,
        env=os.environ | {f"FIN_BEHAVIOR_{k.upper()}": v for k, v in env.items()},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_runs_execute_in_process_by_default_with_no_queue_tags():
    loaded = _loaded_with()
    assert loaded["executor"] == "in_process"
    assert set(loaded["queues"].values()) == {None}


@pytest.mark.skipif(importlib.util.find_spec("dagster_celery") is None, reason="the distributed extra is not installed")
def test_celery_is_chosen_by_a_setting_and_endpoint_steps_go_to_the_serving_hosts_queue():
    loaded = _loaded_with(executor="celery", celery_endpoint_queue="endpoint")
    assert loaded["executor"] == "celery"
    on_host = {name for name, queue in loaded["queues"].items() if queue == "endpoint"}
    assert on_host == {"live_deployment", "live_deployment_checks"}
    assert {queue for name, queue in loaded["queues"].items() if name not in on_host} == {None}
    assert _loaded_with(executor="k8s")["executor"] == "k8s"


@pytest.mark.skipif(importlib.util.find_spec("dagster_celery") is None, reason="the distributed extra is not installed")
def test_the_workers_take_the_visibility_timeout_of_the_settings_not_the_brokers_hour():
    code = "import json; from fin_behavior.worker import app; print(json.dumps(app.conf.broker_transport_options))"
    env = os.environ | {"FIN_BEHAVIOR_CELERY_VISIBILITY_TIMEOUT_SECONDS": "7200"}
    command = [sys.executable, "-W", "ignore", "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    options = json.loads(out.stdout.strip().splitlines()[-1])
    assert options["visibility_timeout"] == 7200 and options["max_retries"] == 3  # dagster-celery's options kept


def test_a_distributed_executor_without_its_extra_says_how_to_install_it(monkeypatch):
    from fin_behavior.defs.executor import DistributedExtraMissing, run_executor
    from fin_behavior.settings import Settings

    monkeypatch.setitem(sys.modules, "dagster_celery", None)  # importing it raises ImportError
    with pytest.raises(DistributedExtraMissing, match="make setup-distributed"):
        run_executor(Settings(executor="celery"))
