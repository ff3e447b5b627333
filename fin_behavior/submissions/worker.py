"""Run one submission as a Dagster run of the `submission` job, for its partition, in the instance at
DAGSTER_HOME (so it is in the UI's run history):

    python -m fin_behavior.submissions.worker SUBMISSION_ID

The CLI and the HTTP API start this process for each submission. The asset's Dagster concurrency pool
`submissions`, set here to SUBMISSION_WORKERS slots, bounds how many train at once whoever started them (the
others wait, shown in the UI as blocked on the pool); the API also starts at most that many processes."""

from __future__ import annotations

import os
import sys

from fin_behavior.settings import get_settings
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
        submission.fail(
            root, {"error": "Internal Error", "message": message.strip()[:2000], "details": "", "help": help_text}
        )
    return result.success


if __name__ == "__main__":
    sys.exit(0 if run(sys.argv[1]) else 1)
