"""Four-eyes promotion. With the policy `approval_required` on, a version that passed every gate is registered
`pending` and nothing moves it forward (the deployer refuses it: every job, sensor, command, target and the
submissions pipeline go through deployer.deploy) until an actor other than its author approves it. A rejection
is final for that version.

The state lives with the version, as tags on the MLflow model version (`approval.*`, and its `author`); every
decision is also a record of the history (audit.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from filelock import FileLock, Timeout

from fin_behavior.governance import audit
from fin_behavior.records import NotApprovedError

STATUS_TAG, BY_TAG, REASON_TAG, AT_TAG = "approval.status", "approval.by", "approval.reason", "approval.at"
AUTHOR_TAG, AUTHOR_KEY_TAG = "author", "author_key"
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
POLICY = "approval_required (FIN_BEHAVIOR_APPROVAL_REQUIRED)"
DECISIONS_LOCK = "decisions.lock"  # beside the history: a version's state is read, judged and written as one


class PendingApprovalError(NotApprovedError):
    """The policy is on and the version is not approved (pending, or rejected): nothing was started."""


class ApprovalError(RuntimeError):
    """An approval or rejection refused: `status` is what an HTTP API answers with."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Author:
    """Who produced a version: the actor who started its run (or submitted its script), and the fingerprint of
    the API key it came with (submissions)."""

    actor: str
    key: str = ""

    def tags(self, approval_required: bool) -> dict[str, str]:
        """Written at registration: the author, and `pending` when the policy is on."""
        tags = {AUTHOR_TAG: self.actor} | ({AUTHOR_KEY_TAG: self.key} if self.key else {})
        return tags | ({STATUS_TAG: PENDING} if approval_required else {})


def status(tags: dict[str, str]) -> str:
    return tags.get(STATUS_TAG) or PENDING


def approve_command(name: str, version: str) -> str:
    return f"fin-behavior approve {name} {version} --reason TEXT"


def require_approved(approval_required: bool, name: str, version: str, tags: dict[str, str]) -> None:
    """Refuse a version the policy holds back, naming the policy and the command that releases it."""
    if not approval_required:
        return
    state = status(tags)
    if state == APPROVED:
        return
    if state == REJECTED:
        raise PendingApprovalError(
            f"{name} v{version} was rejected by {tags.get(BY_TAG, '?')} ({tags.get(REASON_TAG, '')}); under the "
            f"policy {POLICY} a rejection is final: register a new version through the gates"
        )
    author = tags.get(AUTHOR_TAG) or "unknown (registered before authors were recorded)"
    raise PendingApprovalError(
        f"{name} v{version} is pending approval: the policy {POLICY} is on and nothing deploys it until an actor "
        f"other than its author ({author}) runs `{approve_command(name, version)}`"
    )


def decide(
    client,
    history: audit.History,
    name: str,
    version: str,
    approve: bool,
    who: str,
    reason: str,
    who_key: str = "",
) -> dict:
    """Approve or reject `name` v`version` as `who` for `reason`: the history's record (its seq says which
    approval a deploy carries out). Refused: an unknown version, no reason, a version already decided (a decision
    is made once: two people deciding at once get one decision and one refusal, never both), and an approval by
    its author (four eyes)."""
    if not reason.strip():
        raise ApprovalError("give the reason for the decision (--reason TEXT): it is kept in the history", 400)
    if not version.isdigit():
        raise ApprovalError(f"name a version by its number, not {version!r}", 400)
    history.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = FileLock(history.directory / DECISIONS_LOCK, timeout=history.lock_timeout)
    try:
        with lock:
            return _decide_once(client, history, name, version, approve, who, reason, who_key)
    except Timeout:
        raise ApprovalError(
            f"another decision held {lock.lock_file} for over {history.lock_timeout:g} s (setting "
            "audit_lock_timeout_seconds); nothing was decided: run again"
        ) from None


def _decide_once(
    client, history: audit.History, name: str, version: str, approve: bool, who: str, reason: str, who_key: str
) -> dict:
    from mlflow.exceptions import MlflowException

    try:
        tags = dict(client.get_model_version(name, version).tags)
    except MlflowException:
        raise ApprovalError(f"{name} has no version {version} in the registry", 404) from None
    state = tags.get(STATUS_TAG)
    if state == REJECTED:
        raise ApprovalError(
            f"{name} v{version} was rejected by {tags.get(BY_TAG, '?')} at {tags.get(AT_TAG, '?')} "
            f"({tags.get(REASON_TAG, '')}); a rejection is final: register a new version"
        )
    if state == APPROVED:
        undo = "" if approve else ": a decision is made once; to stop it serving, roll back or register a new version"
        raise ApprovalError(
            f"{name} v{version} is already approved by {tags.get(BY_TAG, '?')} at {tags.get(AT_TAG)}{undo}"
        )
    author, author_key = tags.get(AUTHOR_TAG, ""), tags.get(AUTHOR_KEY_TAG, "")
    if approve and (who == author or (who_key and who_key == author_key)):
        raise ApprovalError(
            f"{who} is the author of {name} v{version} (started the run that produced it, or submitted it): four "
            "eyes: another person must approve it",
            403,
        )
    new = APPROVED if approve else REJECTED
    record = history.append(
        audit.APPROVED if approve else audit.REJECTED,
        name,
        version,
        who,
        reason=reason.strip()[:2_000],
        author=author or None,
        was=state or PENDING,
    )
    at = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in ((STATUS_TAG, new), (BY_TAG, who), (REASON_TAG, reason.strip()[:2_000]), (AT_TAG, at)):
        client.set_model_version_tag(name, version, key, value)
    return record
