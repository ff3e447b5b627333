"""Four eyes on the submissions API: a submitted model's version the policy holds back is approved by a key other
than the submitter's (the submitter's own is a 403), and the approval starts its deployment at once (the worker
process, through the deployer, which checks the approval again); a rejection is final."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from fin_behavior.governance import approval, audit
from fin_behavior.ml import registry
from fin_behavior.records import Evidence, Verdict
from fin_behavior.settings import get_settings
from fin_behavior.submissions import pipeline
from fin_behavior.submissions.api import EXAMPLE, SubmissionService
from fin_behavior.submissions.intake import accept, key_fingerprint
from fin_behavior.submissions.record import Submission

KEY_A, KEY_B = "team-a-s-own-key-0123", "risk-team-s-key-4567"


@pytest.fixture
def service(isolated_settings, monkeypatch):
    monkeypatch.setenv("FIN_BEHAVIOR_APPROVAL_REQUIRED", "true")
    get_settings.cache_clear()
    service = SubmissionService(get_settings())
    service.keys_file.write_text(json.dumps({"keys": [KEY_A, KEY_B]}))
    (isolated_settings / "mlflow").mkdir(parents=True)
    return service


def _pending(name: str) -> Submission:
    """What the submission run leaves under the policy: its version registered by key A's submission, pending."""
    from mlflow import MlflowClient

    settings = get_settings()
    submission = accept(settings, EXAMPLE, name, [], 30, client=key_fingerprint(KEY_A.encode()))
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    client.create_registered_model(name)
    passed = [Verdict("gate", True, True, 1, 1, "as set by the test")]
    tags = registry.evidence_tags([Evidence(stage, "r1", passed) for stage in pipeline.STAGES], pipeline.STAGES)
    tags |= approval.Author(submission.author(""), submission.client).tags(approval_required=True)
    submission.model_version = str(client.create_model_version(name, source=str(settings.var_dir), tags=tags).version)
    submission.enter(settings.submissions_root, "pending_approval")
    return submission


def _ask(service: SubmissionService, calls: list[tuple[str, str, dict | None]]) -> list[httpx.Response]:
    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=60) as client:
            answers = [await client.post(path, json=body, headers={"X-API-Key": key}) for key, path, body in calls]
        await asyncio.gather(*list(service.running))  # the deployments the approvals started, to their end
        return answers

    return asyncio.run(ask())


def test_another_key_approves_and_the_approval_starts_the_deployment(service):
    submission = _pending("team-a-model")
    path = f"/mlops/submissions/{submission.id}"
    own, no_reason, other = _ask(
        service,
        [
            (KEY_A, f"{path}/approve", {"reason": "mine"}),
            (KEY_B, f"{path}/approve", {}),
            (KEY_B, f"{path}/approve", {"reason": "reviewed: the evidence holds"}),
        ],
    )
    assert own.status_code == 403 and "four eyes" in own.json()["message"]
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["message"]
    assert other.status_code == 202 and other.json()["status"] == "approved"
    seq = other.json()["record"]
    records = audit.History.of(get_settings()).records()
    fp_b = key_fingerprint(KEY_B.encode())
    approved = next(r for r in records if r["event"] == audit.APPROVED)
    assert (approved["seq"], approved["actor"], approved["version"]) == (seq, f"key {fp_b}", submission.model_version)
    # The worker took it to the deployer, which found the approval and went on to the bundle (this test's version
    # has none): the deployment it started carried out approval #seq, as the submitter.
    attempt = next(r for r in records if r["event"] == audit.DEPLOY_FAILED)
    assert attempt["details"]["cause"] == f"approval #{seq}"
    assert "cannot fetch team-a-model version 1" in attempt["details"]["reason"]
    assert attempt["actor"] == f"key {submission.client}", attempt
    final = Submission.load(get_settings().submissions_root, submission.id)
    assert final.state == "failed" and final.error["error"] == "Deployment Failed"


def test_a_rejection_is_final(service):
    submission = _pending("team-a-other")
    path = f"/mlops/submissions/{submission.id}"
    rejected, later = _ask(
        service,
        [(KEY_B, f"{path}/reject", {"reason": "no fairness report"}), (KEY_B, f"{path}/approve", {"reason": "ok"})],
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert later.status_code == 409 and "rejected, not pending approval" in later.json()["message"]
    assert Submission.load(get_settings().submissions_root, submission.id).state == "rejected"
    assert [r["event"] for r in audit.History.of(get_settings()).records()] == [
        audit.SUBMISSION_ACCEPTED,
        audit.REJECTED,
    ]
