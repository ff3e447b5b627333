"""The code location loads quickly, every job resolves, and renames show up as a visible diff."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from fin_behavior.definitions import defs

EXPECTED_ASSETS = {
    "raw_transactions",
    "processed_dataset",
    "trained_model",
    "training_environment",
    "serving_environment",
    "compatible_model",
    "registered_model_version",
    "live_deployment",
    "serving_traffic",
    "serving_quality",
    "submitted_model",
}
EXPECTED_JOBS = {"full_pipeline", "retrain", "rebuild_compatible", "deploy", "rollback", "monitor", "submission"}


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
