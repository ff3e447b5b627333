"""Dagster wiring of submitted training scripts: one dynamic partition per submission, so every submission is
a real run in the UI (its log shows each stage; the submission's record, what the CLI and the HTTP API read,
follows it). The domain code is fin_behavior.submissions."""

import time

import dagster as dg

from fin_behavior.defs.executor import on_endpoint_host
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.settings import get_settings
from fin_behavior.submissions import errors, pipeline
from fin_behavior.submissions.record import Submission

submissions = dg.DynamicPartitionsDefinition(name="submission")
POOL = "submissions"  # its slots (SUBMISSION_WORKERS) bound how many scripts train at once, across runs


@dg.asset(
    partitions_def=submissions,
    group_name="submissions",
    pool=POOL,
    op_tags=on_endpoint_host(),
    description="A submitted training script, from its run to its URL: run in its own uv-built environment, "
    "isolated (no platform key or credential, no network, a memory limit, a timeout); its MLflow run and model "
    "found; the model verified in that environment (loads with warnings as errors, scores its input example), "
    "registered under the submission's name with that evidence, and served blue/green on the name's own "
    "stable URL through the same gates as the platform's model.",
)
def submitted_model(
    context: dg.AssetExecutionContext, storage: StorageResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    from mlflow import MlflowClient

    settings = get_settings()
    root = settings.submissions_root
    submission = Submission.load(root, context.partition_key)
    submission.dagster_run_id = context.run.run_id
    try:
        trained = pipeline.train(settings, submission)
        context.log.info(f"{submission.name}: the script's MLflow run {trained.run_id} logged a model, taken as data")
        bundle, verified = pipeline.release(settings, submission, trained)
        with mlflow.start_run(context, storage.mlflow_artifacts):
            client = MlflowClient(tracking_uri=mlflow.uri)
            evidences = [trained.evidence, verified]
            version = pipeline.register(client, settings, submission, bundle, evidences, context.run.run_id)
        submission.model_version = version
        if settings.approval_required:  # held until a reviewer's key approves it (the API deploys it then)
            submission.enter(root, "pending_approval")
            context.log.info(f"{submission.name} v{version} is registered, pending approval (approval_required)")
            return dg.MaterializeResult(metadata={"name": submission.name, "model_version": version,
                                                  "approval": "pending"})  # fmt: skip
        submission.url = pipeline.serve(client, settings, submission, version, context.log.info)
    except errors.SubmissionError as exc:
        submission.fail(root, exc)
        raise dg.Failure(
            str(exc), metadata={"error": dg.MetadataValue.json(exc.to_dict())}, allow_retries=False
        ) from None
    submission.deployment_seconds = round(time.time() - submission.submitted_at, 3)
    submission.enter(root, "deployed")
    return dg.MaterializeResult(
        metadata={
            "name": submission.name,
            "url": dg.MetadataValue.url(submission.url),
            "model_version": version,
            "mlflow_run_id": trained.run_id,
            "environment": str(trained.env.path),
            "requirements": ", ".join(submission.requirements) or "none",
            "seconds": submission.deployment_seconds,
            "evidence": dg.MetadataValue.json([e.to_dict() for e in (trained.evidence, verified)]),
        }
    )


submission_job = dg.define_asset_job(
    "submission",
    selection=dg.AssetSelection.assets(submitted_model),
    partitions_def=submissions,
    description="One submitted training script, from its run to its URL (the CLI and the HTTP API start it).",
)
