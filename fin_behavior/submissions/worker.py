"""Run one submission as a Dagster run of the `submission` job, for its partition, in the instance at
DAGSTER_HOME (so it is in the UI's run history):

    python -m fin_behavior.submissions.worker SUBMISSION_ID
    python -m fin_behavior.submissions.worker SUBMISSION_ID --serve CAUSE   # an approved version, only served

The CLI and the HTTP API start this process for each submission. The asset's Dagster concurrency pool
`submissions`, set here to SUBMISSION_WORKERS slots, bounds how many train at once whoever started them (the
others wait, shown in the UI as blocked on the pool); the API also starts at most that many processes."""

from __future__ import annotations

import os
import sys

from fin_behavior.settings import get_settings
from fin_behavior.submissions.errors import SubmissionError
from fin_behavior.submissions.record import Submission


def run(submission_id: str) -> bool:
    import dagster as dg

    from fin_behavior.definitions import defs
    from fin_behavior.defs.submissions import POOL, submissions

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    # submissions.name is typed optional, but defs/submissions.py names the partitions
    instance.add_dynamic_partitions(submissions.name, [submission_id])  # type: ignore[arg-type]
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.set_concurrency_slots(POOL, get_settings().submission_workers)
    result = defs.resolve_job_def("submission").execute_in_process(
        instance=instance, partition_key=submission_id, raise_on_error=False
    )
    root = get_settings().submissions_root
    submission = Submission.load(root, submission_id)
    if not result.success and submission.state not in ("failed", "deployed"):  # a fault, not the script's
        failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
        error = failure.step_failure_data.error if failure else None
        while error is not None and error.cause is not None:  # the innermost cause says what went wrong
            error = error.cause
        message = error.message if error else "the run failed"
        help_text = f"See Dagster run {result.run_id}; the platform's log has the rest."
        submission.fail(root, SubmissionError("Internal Error", message.strip()[:2000], help=help_text))
    return result.success


def serve_approved(submission_id: str, cause: str) -> bool:
    """Serve the version the run registered, once approved (the policy approval_required held it back): the
    deployer checks the approval again, and the history says which approval this carries out."""
    import time

    from mlflow import MlflowClient

    from fin_behavior.submissions import errors, pipeline

    settings = get_settings()
    root = settings.submissions_root
    submission = Submission.load(root, submission_id)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        submission.url = pipeline.serve(client, settings, submission, submission.model_version, print, cause)
    except errors.SubmissionError as exc:
        submission.fail(root, exc)
        return False
    submission.deployment_seconds = round(time.time() - submission.submitted_at, 3)
    submission.enter(root, "deployed")
    return True


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[2] == "--serve":
        sys.exit(0 if serve_approved(sys.argv[1], sys.argv[3]) else 1)
    sys.exit(0 if run(sys.argv[1]) else 1)
