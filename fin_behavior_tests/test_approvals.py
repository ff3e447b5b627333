"""Four eyes and the history on the whole platform, one user's day: the demo's v1 serves (policy off); with the
policy on a retrained v2 is registered pending and every path refuses it (the retrain run's deployment, the
deploy job by number and by alias, the CLI), naming the policy and the command; its author's approval is refused;
another person's approval deploys it through approval_sensor; a CLI rollback puts v1 back; `fin-behavior audit`
shows v1, v2, v1 in production with times and actors, and `audit verify` holds until the file is touched."""

from __future__ import annotations

import re

import dagster as dg
import pytest

from fin_behavior import cli
from fin_behavior.data.generate import generate_csv
from fin_behavior.defs.sensors import approval_sensor
from fin_behavior.governance import approval, audit
from fin_behavior.ml import registry
from fin_behavior.settings import get_settings
from fin_behavior_tests.e2e import FAST, Platform, failure_message
from fin_behavior_tests.serving_fixtures import served_version

POLICY = "approval_required (FIN_BEHAVIOR_APPROVAL_REQUIRED)"


def _as(monkeypatch, actor: str, policy: bool = True) -> None:
    monkeypatch.setenv("FIN_BEHAVIOR_ACTOR", actor)
    monkeypatch.setenv("FIN_BEHAVIOR_APPROVAL_REQUIRED", "true" if policy else "false")
    get_settings.cache_clear()


def _events(platform: Platform, since: int = 0) -> list[tuple[str, str | None]]:
    return [(r["event"], r["version"]) for r in audit.History.of(get_settings()).records() if r["seq"] > since]


def _last_seq() -> int:
    records = audit.History.of(get_settings()).records()
    return records[-1]["seq"] if records else 0


def _serves(platform: Platform, version: str) -> None:
    assert platform.alias(registry.PRODUCTION) == version and served_version(platform.target) == version


def _pending_message(message: str, version: str) -> None:
    assert f"v{version} is pending approval" in message and POLICY in message, message
    assert f"`fin-behavior approve {get_settings().registered_model_name} {version} --reason TEXT`" in message


def test_1_with_the_policy_off_the_demo_serves_v1_as_before(platform, monkeypatch):
    _as(monkeypatch, "alice", policy=False)
    assert platform.run("full_pipeline", FAST).success
    _serves(platform, "1")
    tags = platform.client.get_model_version(platform.name, "1").tags
    assert tags[approval.AUTHOR_TAG] == "alice" and approval.STATUS_TAG not in tags
    assert _events(platform) == [
        (audit.REGISTERED, "1"),
        (audit.DEPLOY_STARTED, "1"),
        (audit.DEPLOY_SUCCEEDED, "1"),
        (audit.ALIAS_MOVED, "1"),
    ]
    head = tags[audit.HEAD_TAG]
    assert head == f"4:{audit.History.of(get_settings()).records()[-1]['hash']}"  # the chain's head, in MLflow


def test_2_with_the_policy_on_a_new_version_is_registered_pending_and_not_deployed(platform, monkeypatch):
    _as(monkeypatch, "alice")
    generate_csv(platform.var / "data" / "transactions.csv", rows=5_000, seed=7)  # new data: a new model
    seen = _last_seq()
    result = platform.run("retrain", FAST)
    assert not result.success
    _pending_message(failure_message(result), "2")
    tags = platform.client.get_model_version(platform.name, "2").tags
    assert (tags[approval.AUTHOR_TAG], tags[approval.STATUS_TAG]) == ("alice", approval.PENDING)
    assert _events(platform, seen) == [(audit.REGISTERED, "2"), (audit.DEPLOY_FAILED, "2")]
    _serves(platform, "1")


@pytest.mark.parametrize("release", ["2", "candidate"])
def test_3_the_deploy_job_refuses_it_by_number_and_by_alias(platform, monkeypatch, release):
    _as(monkeypatch, "alice")
    result = platform.run("deploy", {"ops": {"live_deployment": {"config": {"release": release}}}})
    assert not result.success
    _pending_message(failure_message(result), "2")
    _serves(platform, "1")


def test_4_the_cli_refuses_a_version_without_approval_too(platform, monkeypatch, capsys):
    """v1 was registered before the policy: with it on, v1 needs a sign-off as well before it is started again."""
    _as(monkeypatch, "alice")
    assert cli.main(["endpoint", "start"]) == 1
    err = capsys.readouterr().err
    assert "failed, nothing changed" in err
    _pending_message(err, "1")
    _serves(platform, "1")


def test_5_its_author_cannot_approve_it(platform, monkeypatch, capsys):
    _as(monkeypatch, "alice")
    assert cli.main(["approve", "2", "--reason", "my model is good"]) == 1
    assert "alice is the author" in capsys.readouterr().err
    assert approval.status(platform.client.get_model_version(platform.name, "2").tags) == approval.PENDING
    assert isinstance(platform.tick(approval_sensor), dg.SkipReason)


def test_6_another_persons_approval_deploys_it_through_the_sensor(platform, monkeypatch, capsys):
    _as(monkeypatch, "bob")
    assert cli.main(["approve", "1", "--reason", "signed off the version serving before the policy"]) == 0
    assert cli.main(["approve", "2", "--reason", "evidence and gates reviewed"]) == 0
    seq = _last_seq()
    request = platform.tick(approval_sensor)
    assert isinstance(request, dg.RunRequest) and request.job_name == "deploy"  # the newest approval only
    assert request.run_config == {"ops": {"live_deployment": {"config": {"release": "2"}}}}
    assert request.tags["fin_behavior/approval"] == str(seq) and request.run_key == f"approval-{seq}"
    result = platform.run(request.job_name, request.run_config, request.tags)
    assert result.success, failure_message(result)
    _serves(platform, "2")
    deployed = platform.instance.get_latest_materialization_event(dg.AssetKey("live_deployment"))
    assert deployed.asset_materialization.metadata["carries_out_approval"].value == f"approval #{seq}"
    moved = audit.History.of(get_settings()).records()[-1]
    assert (moved["event"], moved["version"], moved["actor"]) == (audit.ALIAS_MOVED, "2", "approval_sensor (for bob)")
    assert moved["details"]["cause"] == f"approval #{seq}" and moved["details"]["moved_from"] == "1"
    assert isinstance(platform.tick(approval_sensor), dg.SkipReason)  # done once


def test_7_a_cli_rollback_puts_v1_back_and_the_history_shows_v1_v2_v1(platform, monkeypatch, capsys):
    _as(monkeypatch, "carol")
    assert cli.main(["endpoint", "rollback"]) == 0
    _serves(platform, "1")
    assert _events(platform)[-1] == (audit.ROLLBACK, "1")
    capsys.readouterr()
    assert cli.main(["audit", "--model", platform.name]) == 0
    out = capsys.readouterr().out
    spans = re.findall(r"v(\d+): (\S+) -> (\S+) \(moved there by (.+)\)", out.split("in production:")[1])
    assert [(v, who) for v, _, _, who in spans] == [("1", "alice"), ("2", "approval_sensor (for bob)"), ("1", "carol")]
    assert spans[0][2] == spans[1][1] and spans[1][2] == spans[2][1] and spans[2][2] == "now"
    assert "approved" in out and "evidence and gates reviewed" in out


def test_8_audit_verify_holds_and_names_an_edit_and_a_cut_tail(platform, capsys):
    assert cli.main(["audit", "verify"]) == 0
    path = audit.History.of(get_settings()).path
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    try:
        path.write_text("".join(lines[:-3]))  # the rollback's records cut off
        assert cli.main(["audit", "verify"]) == 1
        assert "the tail was cut: MLflow recorded record" in capsys.readouterr().err
        path.write_text(original.replace('"actor":"bob"', '"actor":"alice"', 1))
        assert cli.main(["audit", "verify"]) == 1
        assert re.search(r"record \d+ \(line \d+\) was edited", capsys.readouterr().err)
    finally:
        path.write_text(original)
    assert cli.main(["audit", "verify"]) == 0
