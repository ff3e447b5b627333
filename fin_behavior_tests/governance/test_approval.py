"""Four eyes on a real MLflow registry: the policy at the deployer (the one place every path passes), the
author's own approval refused, a rejection final, the CLI's approve / reject / audit."""

from __future__ import annotations

import pytest

from fin_behavior import cli
from fin_behavior.deploy.deployer import DeployError, deploy, endpoint_dir, make_target
from fin_behavior.governance import approval, audit
from fin_behavior.ml import registry
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import evidence

NAME = "m"


@pytest.fixture
def client(isolated_settings, monkeypatch):
    """The settings' own registry (what the CLI opens), holding v1 of NAME, authored by alice, pending."""
    from mlflow import MlflowClient

    monkeypatch.setenv("FIN_BEHAVIOR_APPROVAL_REQUIRED", "true")
    monkeypatch.setenv("FIN_BEHAVIOR_REGISTERED_MODEL_NAME", NAME)
    get_settings.cache_clear()
    (isolated_settings / "mlflow").mkdir(parents=True)
    client = MlflowClient(tracking_uri=get_settings().tracking_uri)
    client.create_registered_model(NAME)
    tags = registry.evidence_tags([evidence(stage, "v1") for stage in registry.EVIDENCE_STAGES])
    tags |= approval.Author("alice").tags(approval_required=True)
    version = client.create_model_version(NAME, source=str(isolated_settings), tags=tags).version
    assert str(version) == "1"
    return client


def _as(monkeypatch, actor: str) -> None:
    monkeypatch.setenv("FIN_BEHAVIOR_ACTOR", actor)
    get_settings.cache_clear()


def _events() -> list[tuple[str, str]]:
    return [(r["event"], r["actor"]) for r in audit.History.of(get_settings()).records()]


def _deploy(client, ref: str = "1"):
    settings = get_settings()
    target = make_target(settings)
    return deploy(client, settings, NAME, ref, target, endpoint_dir(settings), who="test", log=lambda _: None)


def test_a_pending_version_is_refused_at_the_deployer_naming_the_policy_and_the_command(client, monkeypatch):
    _as(monkeypatch, "alice")
    with pytest.raises(DeployError) as refused:
        _deploy(client)
    message = str(refused.value)
    assert "pending approval" in message and "approval_required (FIN_BEHAVIOR_APPROVAL_REQUIRED)" in message
    assert f"`fin-behavior approve {NAME} 1 --reason TEXT`" in message and "its author (alice)" in message
    assert _events() == [(audit.DEPLOY_FAILED, "alice")]
    assert registry.alias_version(client, NAME, registry.PRODUCTION) is None


def _kubernetes(tmp_path):
    from unittest.mock import create_autospec

    from kubernetes.client import AppsV1Api, CoreV1Api

    from fin_behavior.deploy import kubernetes as k8s
    from fin_behavior_tests.deploy.test_kubernetes import CONFIG, KEYS

    apps, core = create_autospec(AppsV1Api, instance=True), create_autospec(CoreV1Api, instance=True)
    return k8s.KubernetesTarget(apps, core, CONFIG, lambda release: "image", KEYS), [apps, core]


def _azure(tmp_path):
    from unittest.mock import MagicMock, create_autospec

    from azure.ai.ml.operations import OnlineDeploymentOperations, OnlineEndpointOperations

    from fin_behavior.deploy import azure
    from fin_behavior_tests.deploy.test_azure import CONFIG
    from fin_behavior_tests.helpers import ENVS

    client = MagicMock()
    client.online_endpoints = create_autospec(OnlineEndpointOperations, instance=True)
    client.online_deployments = create_autospec(OnlineDeploymentOperations, instance=True)
    return azure.AzureMLTarget(client, CONFIG, ENVS, tmp_path / "azureml"), [
        client.online_endpoints,
        client.online_deployments,
    ]


@pytest.mark.parametrize("make", [_kubernetes, _azure], ids=["kubernetes", "azureml"])
def test_the_kubernetes_and_azure_targets_are_never_asked_for_a_pending_version(client, make, tmp_path):
    target, apis = make(tmp_path)
    settings = get_settings()
    with pytest.raises(DeployError, match="pending approval: the policy approval_required"):
        deploy(client, settings, NAME, "1", target, tmp_path / "endpoint", who="test", log=lambda _: None)
    assert all(api.mock_calls == [] for api in apis)  # refused before the cluster or the workspace was asked


def test_with_the_policy_off_the_same_version_passes_the_policy(client, monkeypatch):
    monkeypatch.setenv("FIN_BEHAVIOR_APPROVAL_REQUIRED", "false")
    get_settings.cache_clear()
    with pytest.raises(DeployError) as refused:  # it goes on to fetch the bundle, which this version has not
        _deploy(client)
    assert "pending approval" not in str(refused.value) and "cannot" in str(refused.value)


def test_the_author_cannot_approve_another_can_and_the_decision_is_kept(client, monkeypatch, capsys):
    _as(monkeypatch, "alice")
    assert cli.main(["approve", NAME, "1", "--reason", "mine, looks fine"]) == 1
    err = capsys.readouterr().err
    assert "refused: alice is the author of m v1" in err and "four eyes" in err
    assert approval.status(client.get_model_version(NAME, "1").tags) == approval.PENDING

    _as(monkeypatch, "bob")
    assert cli.main(["approve", "1", "--reason", "reviewed the evidence and the report"]) == 0
    assert "m v1 approved by bob" in capsys.readouterr().out
    tags = client.get_model_version(NAME, "1").tags
    assert (tags[approval.STATUS_TAG], tags[approval.BY_TAG]) == ("approved", "bob")
    assert tags[approval.REASON_TAG] == "reviewed the evidence and the report"
    approval.require_approved(True, NAME, "1", tags)  # no longer refused
    assert _events() == [(audit.APPROVED, "bob")]
    assert cli.main(["approve", "1", "--reason", "again"]) == 1
    assert "already approved by bob" in capsys.readouterr().err


def test_the_authors_refusal_names_four_eyes(client, monkeypatch):
    _as(monkeypatch, "alice")
    with pytest.raises(approval.ApprovalError, match=r"alice is the author of m v1 .*four eyes") as refused:
        approval.decide(client, audit.History.of(get_settings()), NAME, "1", True, "alice", "mine")
    assert refused.value.status == 403 and _events() == []


def test_a_rejected_version_cannot_be_approved_later_nor_deployed(client, monkeypatch, capsys):
    _as(monkeypatch, "carol")
    assert cli.main(["reject", NAME, "1", "--reason", "parity report missing"]) == 0
    _as(monkeypatch, "bob")
    assert cli.main(["approve", NAME, "1", "--reason", "changed my mind"]) == 1
    err = capsys.readouterr().err
    assert "was rejected by carol" in err and "a rejection is final" in err
    assert approval.status(client.get_model_version(NAME, "1").tags) == approval.REJECTED
    with pytest.raises(DeployError, match=r"rejected by carol .*a rejection is final"):
        _deploy(client)
    assert _events() == [(audit.REJECTED, "carol"), (audit.DEPLOY_FAILED, "bob")]


def test_a_decision_is_made_once_even_when_reviewers_decide_at_the_same_moment(client, monkeypatch):
    """Six reviewers approve or reject v1 at once: one decision is made, the other five are refused (409), and the
    history, the version's tags and what the deployer does agree on it. Before, an approval then a rejection were
    both taken (a rejection was checked only against an earlier rejection), and decisions read the version's
    state and wrote it apart."""
    import threading

    _as(monkeypatch, "dave")
    history, start = audit.History.of(get_settings()), threading.Barrier(6)
    outcomes: dict[str, object] = {}

    def decide(who: str, approve: bool) -> None:
        start.wait()
        try:
            outcomes[who] = approval.decide(client, history, NAME, "1", approve, who, f"{who} reviewed it")["event"]
        except approval.ApprovalError as exc:
            outcomes[who] = exc.status

    reviewers = [threading.Thread(target=decide, args=(f"reviewer-{i}", i % 2 == 0)) for i in range(6)]
    for thread in reviewers:
        thread.start()
    for thread in reviewers:
        thread.join()
    decided = {who: event for who, event in outcomes.items() if event in (audit.APPROVED, audit.REJECTED)}
    assert len(decided) == 1 and [v for w, v in outcomes.items() if w not in decided] == [409] * 5
    ((who, event),) = decided.items()
    assert _events() == [(event, who)]
    tags = client.get_model_version(NAME, "1").tags
    assert (tags[approval.STATUS_TAG], tags[approval.BY_TAG]) == (
        {audit.APPROVED: approval.APPROVED, audit.REJECTED: approval.REJECTED}[event],
        who,
    )
    with pytest.raises(approval.ApprovalError, match="a decision is made once" if event == audit.APPROVED else "final"):
        approval.decide(client, history, NAME, "1", False, "erin", "too late")


def test_a_decision_needs_a_reason_and_a_known_version(client, monkeypatch, capsys):
    _as(monkeypatch, "bob")
    assert cli.main(["approve", NAME, "7", "--reason", "x"]) == 1
    assert "m has no version 7" in capsys.readouterr().err
    assert cli.main(["approve", NAME, "1", "--reason", "  "]) == 1
    assert "give the reason" in capsys.readouterr().err
    assert _events() == []


def test_audit_shows_and_verifies_the_history(client, monkeypatch, capsys):
    _as(monkeypatch, "bob")
    assert cli.main(["approve", NAME, "1", "--reason", "ok"]) == 0
    capsys.readouterr()
    assert cli.main(["audit", "--model", NAME]) == 0
    assert "approved" in capsys.readouterr().out
    assert cli.main(["audit", "--since", "not a date"]) == 2
    assert "is not a date or time" in capsys.readouterr().err
    assert cli.main(["audit", "verify"]) == 0
    path = audit.History.of(get_settings()).path
    path.write_text(path.read_text().replace('"bob"', '"alice"'))
    assert cli.main(["audit", "verify"]) == 1
    assert "record 1 (line 1) was edited" in capsys.readouterr().err


def test_a_damaged_history_refuses_to_record_and_says_what_to_do(client, monkeypatch, capsys):
    _as(monkeypatch, "bob")
    path = audit.History.of(get_settings()).path
    path.parent.mkdir(parents=True)
    path.write_text('{"seq": 1, "cut short')
    assert cli.main(["approve", NAME, "1", "--reason", "ok"]) == 1
    err = capsys.readouterr().err
    assert "is not a record: the history was damaged; run `fin-behavior audit verify`" in err
    assert approval.status(client.get_model_version(NAME, "1").tags) == approval.PENDING  # nothing half-done
    assert cli.main(["endpoint", "start"]) == 1
    assert "failed, nothing changed" in capsys.readouterr().err
