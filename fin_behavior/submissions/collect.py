"""Finding the model a submitted script logged, inside the script's own sandbox (run there after the script, as
its user): the script wrote the MLflow store, so reading it is the script's business, not the platform's. Prints
one JSON line: the run that logged a model and where that model's files are, relative to the working
directory; or why there is none. The platform then copies those files out as hostile data
(fin_behavior/untrusted.py), from the working directory only, whatever the store said.

    <submission env>/bin/python -m fin_behavior.submissions.collect WORK_DIR

Imports only MLflow and the standard library (what the submission's environment has)."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
from urllib.parse import unquote, urlparse

COLLECTED = ".fin-behavior-collected.json"  # where the script's runner leaves what it found (runner.py)
STORE_FILE = "mlflow.db"  # the script's MLflow store (the platform puts an empty one there: sandbox.py)


def find(work: str) -> dict:
    store = os.path.join(work, STORE_FILE)
    if not os.path.isfile(store) or not _holds_a_run(store):
        return {"error": "no_run"}
    from mlflow import MlflowClient  # only now: a script that never started a run does not wait for its import

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, order_by=["attributes.start_time DESC"]) if experiments else []
    if not runs:
        return {"error": "no_run"}
    models = client.search_logged_models(experiment_ids=experiments)
    for run in runs:
        logged = [m for m in models if m.source_run_id == run.info.run_id]
        if logged:
            if run.info.status != "FINISHED":
                return {"error": "run_failed", "run_id": run.info.run_id, "status": run.info.status}
            location = logged[0].artifact_location
            path = unquote(urlparse(location).path) if location.startswith("file:") else location
            relative = os.path.relpath(os.path.realpath(path), os.path.realpath(work))
            if relative.startswith(os.pardir) or os.path.isabs(relative):
                return {"error": "outside", "run_id": run.info.run_id, "location": location[:300]}
            return {"run_id": run.info.run_id, "model_path": relative}
    latest = runs[0].info
    if latest.status != "FINISHED":
        return {"error": "run_failed", "run_id": latest.run_id, "status": latest.status}
    return {"error": "no_model", "run_id": latest.run_id}


def _holds_a_run(store: str) -> bool:
    """Whether the store has a run, read with SQLite alone (the platform puts an empty store there: sandbox.py);
    True when that cannot tell (MLflow then reads it)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{pathlib.Path(store).absolute().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None
    except sqlite3.Error:
        return True


if __name__ == "__main__":
    print(json.dumps(find(sys.argv[1])))
