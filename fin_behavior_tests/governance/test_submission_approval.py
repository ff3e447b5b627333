"""Four eyes on the submissions API: a submitted model's version the policy holds back is approved by a reviewer's
key (the keys file's "approver_keys"), never the submitter's (a 403), and the approval starts its deployment at
once (the worker process, through the deployer, which checks the approval again); a rejection is final. Another
team's key can neither approve, reject nor see it."""

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

KEY_A, KEY_B, KEY_C = "team-a-s-own-key-0123", "risk-team-s-key-4567", "team-c-s-own-key-8901"


@pytest.fixture
def service(isolated_settings, monkeypatch):
    monkeypatch.setenv("FIN_BEHAVIOR_APPROVAL_REQUIRED", "true")
    get_settings.cache_clear()
    service = SubmissionService(get_settings())
    service.keys_file.write_text(json.dumps({"keys": [KEY_A, KEY_C], "approver_keys": [KEY_B]}))
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


def test_another_team_s_key_can_neither_approve_reject_nor_see_a_pending_submission(service):
    """Team C holds a key the API knows, as team A does: before reviewers had keys of their own any known key
    decided any pending submission, so C could approve A's model past four eyes, or reject it for good."""
    submission = _pending("team-a-third")
    path = f"/mlops/submissions/{submission.id}"
    decided = _ask(
        service,
        [
            (KEY_C, f"{path}/approve", {"reason": "looks fine to team C"}),
            (KEY_C, f"{path}/reject", {"reason": "team C wants it gone"}),
        ],
    )
    assert [r.status_code for r in decided] == [404, 404], [r.text for r in decided]
    assert all(r.json()["message"] == f"no submission {submission.id!r}" for r in decided)  # as an unknown id
    seen = [_get(service, path, key).status_code for key in (KEY_C, KEY_A, KEY_B)]
    assert seen == [404, 200, 200]  # the reviewer sees what it reviews
    assert Submission.load(get_settings().submissions_root, submission.id).state == "pending_approval"
    assert [r["event"] for r in audit.History.of(get_settings()).records()] == [audit.SUBMISSION_ACCEPTED]


def test_the_submitter_withdraws_its_own_and_a_reviewer_s_key_does_not_submit(service):
    submission = _pending("team-a-fourth")
    path = f"/mlops/submissions/{submission.id}"
    submitted, withdrawn = _ask(
        service,
        [
            (KEY_B, "/mlops/deploy", {"script_content": EXAMPLE, "model_name": "risk-team-model"}),
            (KEY_A, f"{path}/reject", {"reason": "withdrawn: trained on last month's extract"}),
        ],
    )
    assert submitted.status_code == 403 and "approver_keys" in submitted.json()["message"], submitted.text
    assert '"keys"' in submitted.json()["help"]
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "rejected"
    rejected = audit.History.of(get_settings()).records()[-1]
    assert (rejected["event"], rejected["actor"]) == (audit.REJECTED, f"key {key_fingerprint(KEY_A.encode())}")


@pytest.mark.parametrize(
    "keys_file",
    [
        json.dumps({"keys": [KEY_A], "approver_keys": KEY_B}),  # a string, not a list
        json.dumps({"keys": [KEY_A], "approver_keys": [KEY_B, " " * 16]}),  # a key of spaces
        json.dumps({"keys": [KEY_A, "tab\tinside-a-key-0123"], "approver_keys": [KEY_B]}),
        '{"keys":' + "[" * 100_000 + "]" * 100_000 + "}",  # nested past the parser's depth
    ],
    ids=["not a list", "a key of spaces", "a control character", "deep nesting"],
)
def test_a_keys_file_with_an_unusable_key_is_the_platform_s_fault_and_lets_no_one_in(service, keys_file):
    """A key of spaces would match the spaces a header ends with, which uvicorn's parser (httptools) keeps: before,
    `Authorization: Bearer` and sixteen spaces approved any submission."""
    submission = _pending("team-a-fifth")
    service.keys_file.write_text(keys_file)
    answers = [
        _get(service, f"/mlops/submissions/{submission.id}", KEY_A),
        _ask(service, [(" " * 16, f"/mlops/submissions/{submission.id}/approve", {"reason": "anyone"})])[0],
    ]
    assert [a.status_code for a in answers] == [503, 503], [a.text for a in answers]
    assert all(a.json()["error"] == "Platform Misconfigured" for a in answers)
    assert Submission.load(get_settings().submissions_root, submission.id).state == "pending_approval"


def test_an_empty_reviewer_list_is_no_reviewer_not_a_broken_file(service):
    service.keys_file.write_text(json.dumps({"keys": [KEY_A], "approver_keys": []}))
    assert _get(service, "/mlops/submissions/unknown-id", KEY_A).status_code == 404  # teams still served


def _get(service: SubmissionService, path: str, key: str) -> httpx.Response:
    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=60) as client:
            return await client.get(path, headers={"X-API-Key": key})

    return asyncio.run(ask())
