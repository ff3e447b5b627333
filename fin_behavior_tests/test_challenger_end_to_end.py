"""Champion and challenger, end to end, on the real endpoint: v1 serves, v2 is trained on new data and registered
(the `candidate`, not deployed). v2 runs as a shadow (`fin-behavior endpoint shadow`): hold-out rows are scored
through the live URL, answered by v1, and v2's service logs its own answers to copies of them under the same
request ids; the true labels come back through /feedback and `compare_challenger` states a verdict. Then v2
answers a sticky split of the subjects, is killed with SIGKILL under load (no client request fails), and is
promoted through the ordinary deployment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import numpy as np
import pandas as pd

from fin_behavior.data.columns import FEATURES, TARGET
from fin_behavior.data.generate import generate_csv
from fin_behavior.deploy import challengers
from fin_behavior.deploy.deployer import DeployError, endpoint_dir
from fin_behavior.governance import audit
from fin_behavior.ml import registry
from fin_behavior.monitoring.challenger import CHECK, VERDICTS, WORSE
from fin_behavior.serving.traffic import in_share
from fin_behavior.settings import get_settings
from fin_behavior_tests.e2e import FAST, failure_message
from fin_behavior_tests.helpers import CLI
from fin_behavior_tests.serving_fixtures import Load, served_version

NO_DEPLOY = {"ops": {**FAST["ops"], "live_deployment": {"config": {"skip": True}}}}


def _cli(platform, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "endpoint", *args], env=os.environ | platform.env, capture_output=True, text=True)


def _counted(platform, mode: str, outcome: str) -> float:
    """A challenger counter of the live color (GET /metrics through the URL)."""
    text = httpx.get(f"{platform.target.url}/metrics", headers={"X-API-Key": platform.target.key()}).text
    line = f'fin_behavior_challenger_requests_total{{mode="{mode}",outcome="{outcome}",version="2"}} '
    return next((float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)), 0.0)


def _shadow_scored(platform) -> float:
    """Requests the shadow answered (its own /metrics, on its private port: it has no public one)."""
    port = platform.target.state()["colors"]["green"]["port"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"X-API-Key": platform.target.key()}).text
    line = 'fin_behavior_requests_total{endpoint="score",status="200"} '
    return next((float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)), 0.0)


def test_a_shadow_challenger_scores_copies_of_live_requests_and_is_compared_with_the_champion(platform):
    assert (result := platform.run("full_pipeline", FAST)).success, failure_message(result)
    generate_csv(platform.var / "data" / "transactions.csv", rows=5_000, seed=7)  # new data: a new model
    assert (result := platform.run("retrain", NO_DEPLOY)).success, failure_message(result)
    assert (platform.alias(registry.PRODUCTION), platform.alias(registry.CANDIDATE)) == ("1", "2")

    shadow = _cli(platform, "shadow")  # the candidate, on a copy of every request
    assert shadow.returncode == 0, shadow.stderr
    assert "gate parity: passed" in shadow.stdout and "shadow of 100% of the clients' requests" in shadow.stdout
    state = platform.target.state()
    assert state["challenger"] and (state["challenger"]["version"], state["challenger"]["mode"]) == ("2", "shadow")
    assert "challenger: v2 on green, shadow of 100%" in _cli(platform, "status").stdout

    artifacts = platform.var / "artifacts"
    rows = pd.read_parquet(sorted((artifacts / "processed_dataset").glob("*/processed_dataset.parquet"))[-1])
    positive = rows[TARGET] == 1  # 100 positives, 500 negatives: each class above challenger_min_class_rows (50)
    rows = pd.concat([rows[positive].sample(100, random_state=0), rows[~positive].sample(500, random_state=0)])
    records = json.loads(rows[list(FEATURES)].to_json(orient="records"))
    ids = []
    with httpx.Client(base_url=platform.target.url, headers={"X-API-Key": platform.target.key()}, timeout=30) as client:
        for record in records:
            answer = client.post("/score", json=[record])
            assert answer.status_code == 200 and answer.json()["model_version"] == "1"  # never the shadow's
            ids.append(answer.json()["request_id"])
        assert _counted(platform, "shadow", "copied") == len(records) and _counted(platform, "shadow", "dropped") == 0
        deadline = time.monotonic() + 20  # the shadow scores its copies on its own time
        while _shadow_scored(platform) < len(records) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _shadow_scored(platform) == len(records)
        labels = [{"request_id": rid, "label": int(y)} for rid, y in zip(ids, rows[TARGET], strict=True)]
        assert client.post("/feedback", json={"labels": labels}).status_code == 202
    time.sleep(0.8)  # the prediction logs are written every 0.5 s

    compared = platform.run("compare_challenger", {"ops": {"challenger_comparison": {"config": {}}}})
    assert compared.success, failure_message(compared)
    metadata = compared.asset_materializations_for_node("challenger_comparison")[0].metadata
    figures = metadata["figures"].value
    assert (metadata["champion_version"].value, metadata["challenger_version"].value) == ("1", "2")
    assert figures["paired_decisions"] == figures["labelled_pairs"] == 600  # v2's own service, the same ids
    assert 0 <= figures["agreement"] <= 1 and figures["probability_psi"] >= 0
    assert figures["champion_requests"] >= 600 and figures["challenger_requests"] >= 600
    assert figures["challenger_latency_p95_ms"] > 0 and figures["champion_error_rate"] == 0.0
    low, high = figures["roc_auc_difference_interval"]
    assert low <= figures["roc_auc_difference"] <= high
    difference = figures["challenger_roc_auc"] - figures["champion_roc_auc"]
    assert np.isclose(figures["roc_auc_difference"], difference, atol=2e-4)
    verdict = metadata["verdict"].value
    assert verdict in VERDICTS and "data:image/png" in metadata["plot"].value
    (check,) = [e for e in compared.get_asset_check_evaluations() if e.check_name == CHECK]
    assert check.description.startswith(verdict) and check.passed == (verdict != WORSE)


def test_a_split_answers_a_sticky_share_of_subjects_and_a_killed_challenger_fails_no_request(platform):
    settings = get_settings()
    target, endpoint = platform.target, endpoint_dir(settings)
    start = {"mode": "split", "share": 0.5, "who": "test"}
    slot = challengers.start(platform.client, settings, platform.name, "2", target, endpoint, **start)  # not a shadow
    assert target.state()["challenger"]["mode"] == "split"
    record, subjects = platform.record(), [f"customer-{n}" for n in range(40)]
    with httpx.Client(base_url=target.url, headers={"X-API-Key": target.key()}, timeout=30) as client:
        seen = {}
        for subject in subjects:
            for _ in range(3):
                answer = client.post("/score", json=[record], headers={"X-Subject-ID": subject})
                assert answer.status_code == 200
                assert answer.headers["X-Model-Version"] == answer.json()["model_version"]  # names who answered
                seen.setdefault(subject, set()).add(answer.json()["model_version"])
        assert all(len(versions) == 1 for versions in seen.values())  # sticky
        on_challenger = {s for s, versions in seen.items() if versions == {"2"}}
        assert on_challenger == {s for s in subjects if in_share(s, "2", 0.5)} and 0 < len(on_challenger) < 40
        # every decision is explained at the live URL by the model that made it (the challenger's by the challenger)
        for subject in (next(iter(on_challenger)), next(s for s in subjects if s not in on_challenger)):
            asked = {"X-Subject-ID": subject, "X-Request-ID": f"explain-{subject}"}
            decided = client.post("/score", json=[record], headers=asked).json()
            explained = client.get(f"/explain/explain-{subject}", params={"top": 2})
            assert explained.status_code == 200, explained.text
            assert explained.json()["model_version"] == decided["model_version"]
            assert explained.headers["X-Request-ID"] == f"explain-{subject}"
            row = explained.json()["rows"][0]
            assert row["probability"] == decided["probabilities"][0] and len(row["reasons"]) == 2
            assert abs(row["base_value"] + sum(row["contributions"].values()) - row["probability"]) < 1e-6
        unknown = client.get("/explain/never-decided")  # asked of both: the champion's reason stands
        assert unknown.status_code == 404 and "never answered here" in unknown.json()["error"], unknown.text
        probe = {"X-API-Key": target.probe_key(), "X-Subject-ID": next(iter(on_challenger))}
        assert client.post("/score", json=[record], headers=probe).json()["model_version"] == "1"  # the champion's
        bad = client.post("/score", json=[record], headers={"X-Subject-ID": "a b"})
        assert bad.status_code == 400 and "X-Subject-ID" in bad.json()["error"]

    with Load(target, record, clients=4) as load:  # no subject: split by request id, so both versions answer
        time.sleep(1.0)
        os.kill(slot.detail["pid"], signal.SIGKILL)
        time.sleep(2.0)
    failed = {outcome: n for outcome, n in load.outcomes.items() if outcome not in ("v1", "v2")}
    assert not failed and load.outcomes["v1"] > 0 and load.outcomes["v2"] > 0, load.outcomes
    state = target.state()
    assert state["challenger"] is None and state["colors"][slot.color]["status"] == "exited"
    assert any("v2 exited" in event["message"] for event in state["events"])
    ended = _last_record(settings)  # the supervisor ended it on its own: the history says so
    assert (ended["event"], ended["actor"], ended["model"], ended["version"]) == (
        audit.CHALLENGER_STOPPED,
        "supervisor",
        platform.name,
        "2",
    ), ended
    assert ended["details"]["reason"] == "v2 exited"


def _last_record(settings) -> dict:
    """The history's last record once the supervisor's is in (it writes it beside its loop, a moment later)."""
    deadline = time.monotonic() + 10
    while (last := audit.History.of(settings).records()[-1])["actor"] != "supervisor" and time.monotonic() < deadline:
        time.sleep(0.1)
    return last


def test_a_restarted_supervisor_ends_the_experiment_and_the_live_version_answers_alone(platform):
    settings = get_settings()
    target, endpoint = platform.target, endpoint_dir(settings)
    challengers.start(platform.client, settings, platform.name, "2", target, endpoint, mode="split", share=1.0, who="t")
    assert served_version(target) == "2"  # every subject on the challenger
    os.kill(target.supervisor_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while target.supervisor_pid() is not None and time.monotonic() < deadline:  # the kill takes a moment
        time.sleep(0.05)
    target.ensure_supervisor()  # what `fin-behavior endpoint start` or systemd does once it is gone
    assert target.state()["challenger"] is None and served_version(target) == "1"
    ended = _last_record(settings)
    assert (ended["event"], ended["actor"], ended["version"]) == (audit.CHALLENGER_STOPPED, "supervisor", "2")
    assert ended["details"]["reason"].startswith("the supervisor restarted")
    assert "no challenger runs" in _cli(platform, "stop-challenger").stdout


def test_a_challenger_is_promoted_through_the_ordinary_deployment_and_its_history_is_recorded(platform):
    settings = get_settings()
    target = platform.target
    assert _cli(platform, "promote").returncode == 1  # none runs (the last one was killed)
    as_challenger = {"release": "2", "challenger": "shadow", "challenger_share": 0.5}  # from the deploy job too
    started = platform.run("deploy", {"ops": {"live_deployment": {"config": as_challenger}}})
    assert started.success, failure_message(started)
    metadata = started.asset_materializations_for_node("live_deployment")[0].metadata
    assert (metadata["served_version"].value, metadata["challenger_version"].value) == ("1", "2")
    assert target.live().version == "1" and platform.alias(registry.PRODUCTION) == "1"  # nothing moved
    unapproved = subprocess.run([*CLI, "endpoint", "promote"], capture_output=True, text=True,
                                env=os.environ | platform.env | {"FIN_BEHAVIOR_APPROVAL_REQUIRED": "true"})  # fmt: skip
    assert unapproved.returncode == 1 and "the challenger keeps running" in unapproved.stderr
    assert target.state()["challenger"]["version"] == "2"  # refused before anything ended
    promoted = _cli(platform, "promote")
    assert promoted.returncode == 0, promoted.stderr
    assert "v2 is production" in promoted.stdout and platform.alias(registry.PRODUCTION) == "2"
    assert target.live().version == "2" and target.state()["challenger"] is None
    events = [(r["event"], r["version"]) for r in audit.History.of(settings).records()]
    for expected in [(audit.CHALLENGER_STARTED, "2"), (audit.CHALLENGER_STOPPED, "2"), (audit.DEPLOY_SUCCEEDED, "2")]:
        assert expected in events
    assert _cli(platform, "stop-challenger").stdout.startswith("no challenger runs")


def test_a_challenger_must_be_another_version_and_a_comparison_must_name_two(platform):
    settings = get_settings()
    try:
        challengers.start(platform.client, settings, platform.name, "2", platform.target, endpoint_dir(settings),
                          mode="shadow", share=1.0, who="t")  # fmt: skip
    except DeployError as exc:
        assert "v2 is the live version itself" in str(exc)
    else:
        raise AssertionError("the live version was accepted as its own challenger")
    same = platform.run("compare_challenger", {"ops": {"challenger_comparison": {"config": {"challenger": "2"}}}})
    assert not same.success and "are both v2; name two different versions" in failure_message(same)
    unknown = platform.run("compare_challenger", {"ops": {"challenger_comparison": {"config": {"challenger": "nope"}}}})
    assert not unknown.success and "has the alias 'nope'" in failure_message(unknown)
