"""Sensors that notice change and rebuild from the stage it affects. On by default in `dagster dev`."""

from pathlib import Path

import dagster as dg

from fin_behavior.defs import jobs
from fin_behavior.defs.dataset import processed_dataset
from fin_behavior.defs.outcomes import STAGE as REALIZED
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.environments.builder import EnvironmentBuildError
from fin_behavior.environments.compatible import BUNDLE_DIR
from fin_behavior.environments.report import versions_fingerprint
from fin_behavior.environments.spec import EnvironmentSpecError, get_spec
from fin_behavior.environments.verify import cached_resolution, training_drift
from fin_behavior.records import ModelInfo, NotApprovedError, TrainingRecord
from fin_behavior.settings import get_settings
from fin_behavior.storage.fingerprint import file_fingerprint

_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _run_in_progress(instance: dg.DagsterInstance, job_name: str) -> str | None:
    runs = instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=_IN_PROGRESS), limit=1)
    return runs[0].run_id if runs else None


def _request_unless_running(
    context: dg.SensorEvaluationContext,
    job_name: str,
    change: str,
    run_key: str,
    tags: dict[str, str],
    run_config: dict | None = None,
) -> dg.RunRequest | dg.SkipReason:
    """One run per change; none while the same job is still queued or running (it would redo the same work)."""
    running = _run_in_progress(context.instance, job_name)
    if running:
        return dg.SkipReason(
            f"{change}, but {job_name} run {running} is still queued or running; comparing again after it"
        )
    return dg.RunRequest(job_name=job_name, run_key=run_key, tags=tags, run_config=run_config or {})


def _current_record(storage: StorageResource) -> TrainingRecord | None:
    try:
        return TrainingRecord.read(storage.versions("trained_model").current())
    except (OSError, ValueError, NotApprovedError):
        return None


def _current_bundle(storage: StorageResource) -> ModelInfo | None:
    try:
        return ModelInfo.read(storage.versions("compatible_model").current() / BUNDLE_DIR)
    except (OSError, ValueError, NotApprovedError):
        return None


def _production_record(storage: StorageResource, mlflow: MlflowTracking) -> tuple[str, TrainingRecord] | None:
    """(registry version, training record) of the trained model behind `production`: the packages the model
    that serves was trained with. None before the first deployment."""
    uri = mlflow.uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None  # nothing registered yet; opening it would create the store
    from mlflow import MlflowClient

    from fin_behavior.ml import registry

    client = MlflowClient(tracking_uri=uri)
    name = get_settings().registered_model_name
    version = registry.alias_version(client, name, registry.PRODUCTION)
    if version is None:
        return None
    trained = client.get_model_version(name, version).tags.get("trained_model_version", "")
    store = storage.versions("trained_model")
    if not trained or not store.published(trained):
        return None
    return version, TrainingRecord.read(store.path(trained))


@dg.sensor(job=jobs.retrain, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30)
def data_version_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    """A new or changed raw file -> one `retrain` run per data version (run key = the version)."""
    path = storage.ensure_raw_data()
    if not path.is_file():
        return dg.SkipReason(f"no raw data file at {path}; set FIN_BEHAVIOR_RAW_DATA_PATH")
    version = file_fingerprint(path, storage.fingerprint_cache)[:16]  # stat first; hashes only on change
    latest = context.instance.get_latest_materialization_event(processed_dataset.key)
    built_from = (
        # a materialization event always carries its materialization, whose tags dagster sets ({} when none)
        latest.asset_materialization.tags.get("dagster/input_data_version/raw_transactions")  # type: ignore[union-attr]
        if latest
        else None
    )
    if version == built_from:
        return dg.SkipReason(f"raw data {path} is version {version}, the one processed_dataset was built from")
    return _retrain_once(
        context,
        version,
        f"raw data version {version} is new",
        f"data-{version}",
        {"fin_behavior/trigger": "data_version", "fin_behavior/raw_data_version": version},
    )


def _retrain_once(
    context: dg.SensorEvaluationContext, key: str, change: str, run_key: str, tags: dict[str, str]
) -> dg.RunRequest | dg.SkipReason:
    """One `retrain` per key (kept as the sensor's cursor once requested), none while one is still running."""
    if key == context.cursor:
        return dg.SkipReason(f"{change}, and its retrain was already requested (run key {run_key})")
    result = _request_unless_running(context, jobs.retrain.name, change, run_key, tags)
    if isinstance(result, dg.RunRequest):
        context.update_cursor(key)
    return result


@dg.sensor(
    jobs=[jobs.retrain, jobs.rebuild_compatible],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)
def environment_drift_sensor(context: dg.SensorEvaluationContext, storage: StorageResource, mlflow: MlflowTracking):
    """Training packages differ from what the production model (before any deployment: the current model)
    was trained with -> `retrain`; the serving spec resolves to another fingerprint than the current bundle
    was built for -> `rebuild_compatible`."""
    settings = get_settings()
    record, bundle = _current_record(storage), _current_bundle(storage)
    if record is None or bundle is None:
        return dg.SkipReason("no approved trained model or compatible bundle yet: nothing to compare against")
    compared = f"trained model {record.version}"
    production = _production_record(storage, mlflow)
    if production is not None:
        version, record = production
        compared = f"production model v{version} (trained model {record.version})"

    drift = training_drift(record.package_versions)
    if drift:
        changes = ", ".join(f"{name} {was} -> {now}" for name, (was, now) in drift.items())
        fingerprint = versions_fingerprint({name: now for name, (_, now) in drift.items()})
        return _request_unless_running(
            context,
            jobs.retrain.name,
            f"training environment changed since {compared} ({changes})",
            f"training-{fingerprint}",
            {"fin_behavior/trigger": "training_environment", "fin_behavior/drift": changes[:200]},
        )

    try:
        spec = get_spec(settings.serving_environment, settings.serving_environments_file)
        fingerprint = cached_resolution(spec, storage.resolution_cache, settings.resolution_max_age_seconds).fingerprint
    except (EnvironmentBuildError, EnvironmentSpecError) as exc:
        return dg.SkipReason(f"cannot resolve the serving environment: {exc}")
    if fingerprint != bundle.environment_fingerprint:
        return _request_unless_running(
            context,
            jobs.rebuild_compatible.name,
            f"serving environment now resolves to {fingerprint}",
            f"serving-{fingerprint}",
            {"fin_behavior/trigger": "serving_environment", "fin_behavior/environment_fingerprint": fingerprint},
        )
    return dg.SkipReason(
        f"training packages match {compared} ({len(record.package_versions)} "
        f"versions compared); serving environment {settings.serving_environment} resolves to {fingerprint}, the "
        f"fingerprint bundle {bundle.trained_model_version}/{fingerprint} was built for"
    )


@dg.sensor(job=jobs.deploy, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=15)
def approval_sensor(context: dg.SensorEvaluationContext):
    """A newly approved version of the platform's model -> one `deploy` run of it, tagged with the approval it
    carries out (run key = the approval's record in the history). Reads the history file only."""
    from fin_behavior.defs.deployment import APPROVAL_RUN_TAG
    from fin_behavior.defs.registry import ACTOR_RUN_TAG
    from fin_behavior.governance import audit

    settings = get_settings()
    seen = int(context.cursor or 0)
    name = settings.registered_model_name
    approvals = [
        r
        for r in audit.History.of(settings).records()
        if r.get("seq", 0) > seen and r.get("event") == audit.APPROVED and r.get("model") == name
    ]
    if not approvals:
        return dg.SkipReason(f"no approval of {name} since record {seen} of the history")
    newest = approvals[-1]  # an older approval the newer one supersedes is not deployed after it
    version, seq = str(newest["version"]), str(newest["seq"])
    result = _request_unless_running(
        context,
        jobs.deploy.name,
        f"{name} v{version} was approved by {newest['actor']}",
        f"approval-{seq}",
        {
            APPROVAL_RUN_TAG: seq,
            ACTOR_RUN_TAG: f"approval_sensor (for {newest['actor']})"[:200],
            "fin_behavior/trigger": "approval",
        },
        {"ops": {"live_deployment": {"config": {"release": version}}}},
    )
    if isinstance(result, dg.RunRequest):
        context.update_cursor(seq)
    return result


@dg.sensor(job=jobs.retrain, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=60)
def performance_decay_sensor(context: dg.SensorEvaluationContext):
    """The production version's realized ROC-AUC or recall failed in the last realized_performance -> one
    `retrain` per window (run key = version and window), on data that now includes the labelled production rows;
    the new version goes through every gate, and serves only if it passes them."""
    latest = context.instance.get_latest_materialization_event(dg.AssetKey(REALIZED))
    if latest is None or latest.asset_materialization is None:
        return dg.SkipReason("realized_performance has not been materialized yet (the monitor job does it)")
    metadata = latest.asset_materialization.metadata
    decayed = metadata.get("decayed")
    decayed_text = str(decayed.value) if decayed is not None else "no"
    window = str(metadata["window_key"].value) if "window_key" in metadata else ""
    if decayed_text == "no" or not window:
        return dg.SkipReason(f"the last realized_performance found no decay ({window or 'no window'})")
    return _retrain_once(
        context,
        window,
        f"realized performance failed in window {window} ({decayed_text})",
        f"decay-{window}",
        {"fin_behavior/trigger": "performance_decay", "fin_behavior/decayed": decayed_text[:200]},
    )


monitor_schedule = dg.ScheduleDefinition(
    name="monitor_every_5_minutes",
    job=jobs.monitor,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="serving_quality every 5 minutes: a drift or a breached SLO alerts within minutes.",
)
