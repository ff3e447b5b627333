"""Script in, URL out, end to end and for real: the seed's example script submitted through the CLI and through
the HTTP API, each a Dagster run in a worker process, trained isolated in its uv-built environment, verified,
registered and served on the name's own URL; a resubmission swapping versions under load while another name's
submission runs beside it. The tests run in order on one platform."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fin_behavior.deploy.local import free_port
from fin_behavior.records import read_json
from fin_behavior.settings import get_settings
from fin_behavior.submissions import pipeline, sandbox
from fin_behavior.submissions.api import EXAMPLE
from fin_behavior.submissions.record import Submission
from fin_behavior_tests.helpers import ENVS
from fin_behavior_tests.serving_fixtures import Load

CLI = [sys.executable, "-m", "fin_behavior.cli"]


@pytest.fixture(scope="module")
def platform_env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("submissions")  # closed to others (pytest makes it so): confined, none need a way in
    env = {
        "FIN_BEHAVIOR_VAR_DIR": str(tmp_path_factory.mktemp("var")),
        "FIN_BEHAVIOR_SUBMISSIONS_DIR": str(root),
        "FIN_BEHAVIOR_ENVS_DIR": str(ENVS),
        "FIN_BEHAVIOR_DRAIN_SECONDS": "2",
        "FIN_BEHAVIOR_SUBMISSION_API_PORT": str(free_port()),
        "FIN_BEHAVIOR_SUBMISSION_KEY": "team-a-s-own-key",  # the command line acts as team A
        "FIN_BEHAVIOR_SUBMISSION_PREDICT_TIMEOUT_SECONDS": "2",
        "DAGSTER_HOME": str(tmp_path_factory.mktemp("dagster_home")),
    }
    yield env
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        for name in os.listdir(root / "endpoints"):
            pipeline.endpoint(get_settings(), name)[0].stop_all()
    get_settings.cache_clear()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def shared_environments(platform_env, monkeypatch):
    """This module's one platform in place of the per-test state directories."""
    for key, value in platform_env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def _input_example(submission_id: str) -> dict:
    return read_json(get_settings().submissions_root / submission_id / "bundle" / "expected.json")


# The second seed's test script, byte for byte: MLflow's default serialization, no input example.
SEED_SCRIPT = """import mlflow
import mlflow.sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.datasets import make_classification

X, y = make_classification(n_samples=1000, n_features=20)

with mlflow.start_run():
    model = RandomForestClassifier()
    model.fit(X, y)
    mlflow.sklearn.log_model(model, 'model')
"""


def test_the_cli_submits_the_seed_script_and_its_url_scores_the_input_example(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SEED_SCRIPT)
    command = [*CLI, "submit", str(script), "--name", "seed-model", "--requirement", "scikit-learn", "--wait"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    progress = re.findall(r"^\s+[\d.]+ s  (\w+)$", done.stdout, re.M)
    assert progress[-1] == "deployed" and {"training", "verifying", "deploying"} <= set(progress), done.stdout
    url = re.search(r"v1 of seed-model serves at (\S+)/score", done.stdout)[1]
    submission_id = re.search(r"submission (\w+): seed-model, queued", done.stdout)[1]
    record = Submission.load(get_settings().submissions_root, submission_id)
    assert record.model_version == "1" and record.url == url and record.dagster_run_id and record.mlflow_run_id

    example = _input_example(submission_id)
    target = pipeline.endpoint(get_settings(), "seed-model")[0]
    response = httpx.post(f"{url}/score", json=example["records"], headers={"X-API-Key": target.key()})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == example["predictions"] and len(example["records"]) == 1
    assert len(example["records"][0]) == 20  # the forest said its inputs: 20 features, a row of zeros
    log = (get_settings().submissions_root / submission_id / "train.log").read_text()
    assert "getpwuid" not in log and "Untrusted" not in log  # its user has a name; its forest is not refused
    assert httpx.post(f"{url}/score", json=example["records"]).status_code == 401  # its own key, as the platform's
    if os.geteuid() == 0:  # the submitted code serves confined: its own user id, files, processes, (no) network
        started = target.live().detail["pid"]  # stays outside, passing the supervisor's signals on
        served = served_process(started)
        assert os.stat(f"/proc/{served}").st_uid == sandbox.users(get_settings(), "seed-model").serve
        for namespace in ("mnt", "net", "pid", "ipc", "uts"):
            assert os.readlink(f"/proc/{served}/ns/{namespace}") != os.readlink(f"/proc/self/ns/{namespace}")


def served_process(started: int) -> int:
    """The scoring service's own process below the one the supervisor started (the launcher, bwrap, its init)."""
    pending = [started]
    while pending:
        pid = pending.pop()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if argv[1:4] == [b"-I", b"-m", b"fin_behavior.serving.app"]:  # the service itself, not a launcher naming it
            return pid
        pending += map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    raise AssertionError(f"no scoring service below {started}")


def _api(env: dict) -> tuple[subprocess.Popen, httpx.Client]:
    server = subprocess.Popen([*CLI, "submissions", "serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{env['FIN_BEHAVIOR_SUBMISSION_API_PORT']}", timeout=10)
    deadline = time.monotonic() + 60
    while True:
        try:
            client.get("/mlops/help")
            break
        except httpx.TransportError:
            assert server.poll() is None and time.monotonic() < deadline, "the submissions API did not start"
            time.sleep(0.2)
    key = read_json(get_settings().submissions_root / "keys.json")["keys"][0]
    client.headers["X-API-Key"] = key
    return server, client


def _finished(client: httpx.Client, submission_id: str, key: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    asked = f"/mlops/submissions/{submission_id}"
    while (status := client.get(asked, headers={"X-API-Key": key}).json())["status"] not in ("deployed", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    return status


def test_the_api_swaps_a_resubmitted_name_under_load_while_another_submission_runs_beside_it(platform_env, monkeypatch):
    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSION_MAX_PENDING", "2")  # the two below; a third is refused
    monkeypatch.setenv("FIN_BEHAVIOR_SUBMISSION_MAX_PENDING_PER_KEY", "1")
    server, client = _api(platform_env)
    keys_file = get_settings().submissions_root / "keys.json"
    team_a, team_b, team_c = platform_env["FIN_BEHAVIOR_SUBMISSION_KEY"], "team-b-s-own-key", "team-c-s-own-key"
    operator = read_json(keys_file)["keys"][0]
    keys_file.write_text(json.dumps({"keys": [operator, team_a, team_b, team_c]}))  # the operator adds a key per team
    try:
        mistakes = {
            "no key": client.post("/mlops/deploy", json={}, headers={"X-API-Key": "wrong"}),
            "not JSON": client.post("/mlops/deploy", content=b"{not json"),
            "syntax": client.post("/mlops/deploy", json={"script_content": "def f(:\n", "model_name": "m"}),
            "unknown id": client.get("/mlops/submissions/does-not-exist"),
            "deep JSON": client.post("/mlops/deploy", content=b'{"a":' * 5_000 + b"1" + b"}" * 5_000),
            "huge id": client.get("/mlops/submissions/" + "a" * 3_000),  # longer than a file name may be
        }
        assert {k: r.status_code for k, r in mistakes.items()} == {
            "no key": 401, "not JSON": 400, "syntax": 422, "unknown id": 404, "deep JSON": 400, "huge id": 404
        }  # fmt: skip
        assert "nested too deeply" in mistakes["deep JSON"].json()["message"]
        assert all({"error", "message", "details", "help"} <= set(r.json()) for r in mistakes.values())
        assert "line 1" in mistakes["syntax"].json()["message"]
        assert "log_model" in client.get("/mlops/help").json()["contract"]

        target = pipeline.endpoint(get_settings(), "seed-model")[0]
        served = next(get_settings().submissions_root.glob("*/bundle/expected.json"))
        with Load(target, read_json(served)["records"][0], clients=4) as load:

            def submit(name: str, key: str) -> httpx.Response:  # seed-model keeps its inputs from v1 to v2
                script = SEED_SCRIPT if name == "seed-model" else EXAMPLE
                request = {"script_content": script, "model_name": name, "requirements": ["scikit-learn"]}
                return client.post("/mlops/deploy", json=request, headers={"X-API-Key": key})

            taken = submit("seed-model", team_b)  # team A's name (made from the command line, as team A)
            assert taken.status_code == 403 and taken.json()["error"] == "Forbidden", taken.text
            assert "belongs to another team" in taken.json()["message"]
            first = submit("seed-model", team_a)  # its owner replaces its version as before
            assert first.status_code == 202, first.text
            again = submit("third-model", team_a)  # one key cannot fill the queue for the others
            assert again.status_code == 429 and again.headers["retry-after"] == "60", again.text
            assert again.json()["error"] == "Too Many Submissions" and "_PER_KEY" in again.json()["help"]
            assert again.json()["message"] == "this key already has 1 queued or running (one key holds at most 1)"
            second = submit("other-model", team_b)  # another team is not starved
            assert second.status_code == 202, second.text
            third = submit("third-model", team_c)
            assert third.status_code == 429 and "SUBMISSION_MAX_PENDING." in third.json()["help"], third.text
            assert third.json()["message"] == "2 submissions are queued or running; this platform holds at most 2"
            ids = first.json()["submission_id"], second.json()["submission_id"]
            seen_by = {key: client.get(f"/mlops/submissions/{ids[0]}", headers={"X-API-Key": key}).status_code
                       for key in (team_a, team_b)}  # fmt: skip
            assert seen_by == {team_a: 200, team_b: 404}  # a submission is seen with the key it came with only
            resubmitted, other = _finished(client, ids[0], team_a), _finished(client, ids[1], team_b)
            time.sleep(1)  # and a moment on the new version
        syntax = {"script_content": "def f(:\n", "model_name": "m"}
        deadline = time.monotonic() + 30  # the worker processes exit just after they record the outcome
        while (again := client.post("/mlops/deploy", json=syntax)).status_code == 429:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.2)
        assert again.status_code == 422  # judged again: the queue has room once both are done
    finally:
        server.terminate()
        server.wait(timeout=30)

    errors_in_full = json.dumps([resubmitted["error"], other["error"]], indent=1)  # the colors' log tails, whole
    assert resubmitted["status"] == other["status"] == "deployed", errors_in_full
    assert resubmitted["model_version"] == "2" and other["model_version"] == "1"
    assert resubmitted["inference_url"] == f"{target.url}/score" != other["inference_url"]
    assert load.failures == {} and load.outcomes["v1"] > 0 and load.outcomes["v2"] > 0, load.outcomes

    def training(status: dict) -> tuple[float, float]:
        return status["submitted_at"] + status["timings"]["training"], status["submitted_at"] + status["timings"][
            "verifying"
        ]

    (a_start, a_end), (b_start, b_end) = training(resubmitted), training(other)
    assert a_start < b_end and b_start < a_end, "the two scripts did not train at the same time"


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
        return ["ok"] * len(model_input)


with mlflow.start_run():
    mlflow.pyfunc.log_model(name="model", python_model=Hostile(), input_example=pd.DataFrame({"x": [0.0]}))
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
