"""Script in, URL out, end to end and for real: the seed's example script submitted through the CLI and through
the HTTP API, each a Dagster run in a worker process, trained isolated in its uv-built environment, verified,
registered and served on the name's own URL; a resubmission swapping versions under load while another name's
submission runs beside it; the served forest and logistic regression explaining their decisions exactly. The tests
run in order on one platform."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest

from fin_behavior.records import read_json
from fin_behavior.settings import get_settings
from fin_behavior.submissions import pipeline, sandbox
from fin_behavior.submissions.record import Submission
from fin_behavior_tests.helpers import CLI
from fin_behavior_tests.serving_fixtures import Load

pytestmark = pytest.mark.usefixtures("on_one_platform")


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


# Another team's script: a logistic regression behind a scaler, on a table, with a real input example.
LOGISTIC_SCRIPT = """import mlflow
import mlflow.sklearn
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

X, y = make_classification(n_samples=1000, n_features=8, random_state=1)
X = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
with mlflow.start_run():
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    mlflow.sklearn.log_model(model, name="model", input_example=X[:100])
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


def _explained(name: str, records: list[dict], request_id: str) -> tuple[dict, dict]:
    """(the /score answer, POST /explain's answer), asked of the name's URL; the same decision explained by its id
    answers the same rows."""
    target = pipeline.endpoint(get_settings(), name)[0]
    with httpx.Client(base_url=target.url, headers={"X-API-Key": target.key()}, timeout=120) as client:
        scored = client.post("/score", json=records, headers={"X-Request-ID": request_id})
        posted = client.post("/explain", json=records)  # the first starts the color's explanation worker
        time.sleep(0.8)  # the log is written every 0.5 s
        logged = client.get(f"/explain/{request_id}", params={"top": 2})
    assert scored.status_code == posted.status_code == logged.status_code == 200, (posted.text, logged.text)
    for by_id, direct in zip(logged.json()["rows"], posted.json()["rows"], strict=True):
        assert by_id["contributions"] == direct["contributions"] and len(by_id["reasons"]) == 2
    return scored.json(), posted.json()


def _model_of(name: str):
    """The name's served model, as the test loads it itself: the scikit-learn model its script logged."""
    root = get_settings().submissions_root
    submissions = [Submission.load(root, path.parent.name) for path in root.glob("*/submission.json")]
    served = max((s for s in submissions if s.name == name and s.state == "deployed"), key=lambda s: s.submitted_at)
    return mlflow.sklearn.load_model(str(served.directory(root) / pipeline.BUNDLE_DIR / pipeline.MODEL_DIR))


def test_the_served_forest_explains_each_decision_exactly_by_its_probability():
    """The seed's forest (20 unnamed inputs): per row, contributions of f0..f19 that add up to its probability of
    class 1 to 1e-6, the probability its own predict_proba gives, and the label /score answered beside it."""
    rows = np.random.default_rng(7).normal(size=(30, 20))
    records = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in rows]
    scored, explained = _explained("seed-model", records, "seed-forest-30")
    assert explained["scale"] == "probability"
    probabilities = _model_of("seed-model").predict_proba(rows)[:, 1]
    for i, row in enumerate(explained["rows"]):
        assert list(row["contributions"]) == list(records[i])
        assert abs(row["base_value"] + sum(row["contributions"].values()) - row["probability"]) <= 1e-6
        assert row["probability"] == pytest.approx(probabilities[i], abs=1e-12)
        assert row["prediction"] == scored["predictions"][i] == int(row["probability"] > 0.5)
        assert " the probability by " in row["reasons"][0]["text"]
    if os.geteuid() == 0:  # the explanation worker runs in the color's sandbox, the first to go if memory runs out
        target = pipeline.endpoint(get_settings(), "seed-model")[0]
        served = served_process(target.live().detail["pid"])
        workers = [pid for task in Path(f"/proc/{served}/task").glob("*/children") for pid in task.read_text().split()]
        assert any(Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "1000" for pid in workers), workers


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
        # two clients: requests in flight through the swap and through the other submission's run after it
        record = read_json(served)["records"][0]
        with Load(target, record, clients=2, quiet_until_rollout=True, interval=Load.STEADY) as load:

            def submit(name: str, key: str) -> httpx.Response:  # seed-model keeps its inputs from v1 to v2
                script = SEED_SCRIPT if name == "seed-model" else LOGISTIC_SCRIPT
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
    assert load.failures == {} and load.saw_rollout, load.outcomes
    assert load.outcomes["v1"] > 0 and load.outcomes["v2"] > 0, load.outcomes

    def training(status: dict) -> tuple[float, float]:
        return status["submitted_at"] + status["timings"]["training"], status["submitted_at"] + status["timings"][
            "verifying"
        ]

    (a_start, a_end), (b_start, b_end) = training(resubmitted), training(other)
    assert a_start < b_end and b_start < a_end, "the two scripts did not train at the same time"


def test_the_served_logistic_regression_explains_each_decision_exactly_by_its_log_odds():
    """The other team's logistic regression: contributions of its 8 columns (each coef * (x - the input example's
    mean), through its scaler) that add up to the log-odds of class 1 to 1e-6, whose logistic function is the
    probability; the label /score answered beside them."""
    rows = np.random.default_rng(8).normal(size=(30, 8))
    records = [{f"x{i}": float(v) for i, v in enumerate(row)} for row in rows]
    scored, explained = _explained("other-model", records, "other-logistic-30")
    assert explained["scale"] == "log_odds"
    model, table = _model_of("other-model"), pd.DataFrame(records)
    log_odds, probabilities = model.decision_function(table), model.predict_proba(table)[:, 1]
    for i, row in enumerate(explained["rows"]):
        assert list(row["contributions"]) == list(records[i])
        assert abs(row["base_value"] + sum(row["contributions"].values()) - row["log_odds"]) <= 1e-6
        assert row["log_odds"] == pytest.approx(log_odds[i], abs=1e-9)
        assert row["probability"] == pytest.approx(probabilities[i], abs=1e-12)
        assert row["prediction"] == scored["predictions"][i] == int(row["probability"] > 0.5)
        assert " the log-odds by " in row["reasons"][0]["text"]
