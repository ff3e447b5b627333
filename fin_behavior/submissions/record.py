"""A submission on disk: `<submissions dir>/<id>/` holds the script as submitted (`train.py`), the record of
where it stands (`submission.json`, one writer at a time: the run that works on it), its working directory and
the bundle it becomes. The CLI and the HTTP API read the record to report progress."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fin_behavior.records import read_json, write_json
from fin_behavior.submissions.errors import ErrorBody, SubmissionError

ID_LENGTH = 12  # hex digits of a submission id
STATES = (
    "queued",
    "preparing",
    "training",
    "validating",
    "verifying",
    "pending_approval",  # registered; the policy approval_required holds it until a reviewer's key approves it
    "rejected",
    "deploying",
    "deployed",
    "failed",
)
RECORD_FILE, SCRIPT_FILE = "submission.json", "train.py"


@dataclass
class Submission:
    id: str
    name: str  # the registered model name, and the endpoint's
    requirements: list[str]
    timeout_seconds: float
    state: str = "queued"
    submitted_at: float = field(default_factory=time.time)
    timings: dict[str, float] = field(default_factory=dict)  # state -> seconds from submission when it began
    dagster_run_id: str = ""
    mlflow_run_id: str = ""  # in the script's own MLflow store
    model_version: str = ""  # in the platform's registry, under `name`
    url: str = ""
    deployment_seconds: float = 0.0
    error: ErrorBody | None = None
    client: str = ""  # the fingerprint of the API key it came with (never the key); "" = the command line

    @staticmethod
    def path(root: Path, submission_id: str) -> Path:
        return root / submission_id

    def directory(self, root: Path) -> Path:
        return root / self.id

    def save(self, root: Path) -> None:
        write_json(self.directory(root) / RECORD_FILE, asdict(self))

    @staticmethod
    def well_formed(submission_id: str) -> bool:
        """What intake hands out (secrets.token_hex(6)): anything else names no submission, and no path."""
        return len(submission_id) == ID_LENGTH and all(c in "0123456789abcdef" for c in submission_id)

    @classmethod
    def load(cls, root: Path, submission_id: str) -> Submission:
        return cls(**read_json(root / submission_id / RECORD_FILE))

    def enter(self, root: Path, state: str) -> None:
        assert state in STATES, state
        self.state = state
        self.timings[state] = round(time.time() - self.submitted_at, 3)
        self.save(root)

    def fail(self, root: Path, error: SubmissionError) -> None:
        self.error = error.to_dict()
        self.enter(root, "failed")

    def author(self, operator: str) -> str:
        """Who submitted it, as the history and the four-eyes rule name them: its API key's fingerprint, or
        (from the command line without SUBMISSION_KEY) the operator."""
        return f"key {self.client}" if self.client else operator

    def public(self) -> dict[str, Any]:
        """What the API and the CLI show."""
        return asdict(self)
