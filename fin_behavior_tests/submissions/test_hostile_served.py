"""A served submission is hostile too: what its model does while it serves (write, link, stall) never makes the
root platform write, chown or follow anything for it. Its own module, on its own platform, so that it runs beside
the other end-to-end module under parallel workers."""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx
import pytest

from fin_behavior.records import read_json
from fin_behavior.settings import get_settings
from fin_behavior.submissions import pipeline
from fin_behavior_tests.helpers import CLI

pytestmark = pytest.mark.usefixtures("on_one_platform")

HOSTILE_SERVED = """
import json, os, time
import mlflow, mlflow.pyfunc, pandas as pd

PLATFORM = PLATFORM_PATHS
LINKS = LINK_TARGETS


class Hostile(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        x = float(model_input["x"].iloc[0])
        if x == 1.0:  # write what the platform keeps and reads as root
            found = {}
            for name, path in PLATFORM.items():
                try:
                    with open(path, "a") as out:
                        out.write("owned")
                    found[name] = "written"
                except OSError as exc:
                    found[name] = type(exc).__name__
            return [json.dumps(found)]
        if x == 2.0:  # plant links to the platform's files where it writes, for root to follow later
            for name, target in LINKS.items():
                os.symlink(target, name)
            return [",".join(sorted(os.listdir(".")))]
        if x == 3.0:
            time.sleep(30)
        if x == 4.0:  # what of the platform's environment it sees
            return [",".join(sorted(os.environ))]
        return ["ok"] * len(model_input)


with mlflow.start_run():
    mlflow.pyfunc.log_model(  # its requirements said, not inferred (seconds a run)
        name="model", python_model=Hostile(), input_example=pd.DataFrame({"x": [0.0]}), pip_requirements=["pandas"]
    )
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a served model's own user id and directories need a root platform")
def test_a_served_model_cannot_make_the_platform_act_for_it(tmp_path):
    settings = get_settings()
    endpoint = settings.submissions_root / "endpoints" / "hostile-model"
    canary = tmp_path / "root-only.txt"  # in place of a file only root may read or change
    canary.write_text("root's own")
    canary.chmod(0o600)
    before = canary.stat()
    platform = {
        name: str(endpoint / name) for name in ("endpoint.json", "supervisor.pid", "port", "keys.json", "logs/blue.log")
    } | {"canary": str(canary)}
    links = {name: str(canary) for name in ("predictions.jsonl.1", "supervisor.pid", "blue.log", "port")}
    script = tmp_path / "train.py"
    script.write_text(HOSTILE_SERVED.replace("PLATFORM_PATHS", repr(platform)).replace("LINK_TARGETS", repr(links)))
    command = [*CLI, "submit", str(script), "--name", "hostile-model", "--wait"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    target = pipeline.endpoint(settings, "hostile-model")[0]

    def score(x: float, timeout: float = 10) -> httpx.Response:
        return httpx.post(f"{target.url}/score", json=[{"x": x}], headers={"X-API-Key": target.key()}, timeout=timeout)

    probed = json.loads(score(1.0).json()["predictions"][0])
    # the endpoint's state is not there (only the way to its key file and its own directory is), the key file it
    # reads it cannot change, the machine's files it does not see
    assert set(probed) == set(platform) and "written" not in probed.values(), probed
    assert probed["logs/blue.log"] == probed["canary"] == "FileNotFoundError", probed
    assert set(links) <= set(score(2.0).json()["predictions"][0].split(","))
    seen = score(4.0).json()["predictions"][0].split(",")  # none of the platform's keys, paths or credentials
    assert {"PATH", "HOME", "LANG"} <= set(seen), seen
    assert not [name for name in seen if name.startswith(("FIN_BEHAVIOR", "AZURE", "DAGSTER", "MLFLOW"))], seen
    explained = httpx.post(f"{target.url}/explain", json=[{"x": 0.0}], headers={"X-API-Key": target.key()}, timeout=60)
    assert explained.status_code == 501, explained.text  # not explained, and said why, naming what it is
    assert "a custom MLflow pyfunc model (Hostile) is not explained" in explained.json()["error"]

    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        slow = client.post(f"{target.url}/score", json=[{"x": 3.0}], headers={"X-API-Key": target.key()})
    assert slow.status_code == 504 and "within 2 s" in slow.json()["error"]
    assert time.monotonic() - started < 10
    health = httpx.get(f"{target.url}/health", timeout=5)  # a predict still sleeping holds a thread, not the service
    assert health.status_code == 200

    again = subprocess.run(command, capture_output=True, text=True, timeout=900)  # the platform acts: a new color
    assert again.returncode == 0, again.stdout + again.stderr
    target.stop_all()  # ... and the endpoint stops, its directories unmounted
    after = canary.stat()
    assert canary.read_text() == "root's own"
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert read_json(endpoint / "endpoint.json")["colors"]  # the supervisor's state is its own, still readable
    assert target.answering() is None
