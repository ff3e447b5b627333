"""Dagster wiring of the registry stage: the approved bundle becomes an MLflow model version (`candidate`),
tagged with the evidence of every stage behind it."""

import dagster as dg

from fin_behavior.defs.checks import check_result, check_specs
from fin_behavior.defs.compatible import compatible_model
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.environments.compatible import BUNDLE_DIR
from fin_behavior.outcome import Outcome
from fin_behavior.records import ModelInfo, NotApprovedError

REGISTRY_CODE_VERSION = "registry-v2"
STAGE = "registered_model_version"
_CHECKS = {"candidate_is_current_bundle": (True, "`candidate` names a version holding exactly the current bundle.")}


class RegistryConfig(SettingsConfig):
    registered_model_name: str | None = setting("registered_model_name")


def _provenance(info: ModelInfo, dagster_run_id: str, trained_run_id: str) -> dict[str, str]:
    tags = {
        "data_version": info.data_version,
        "environment_fingerprint": info.environment_fingerprint,
        "serving_environment": info.serving_environment,
        "runtime": info.runtime,
        "decision_threshold": str(info.decision_threshold),
        "trained_model_version": info.trained_model_version,
        "trained_model_mlflow_run_id": trained_run_id,
        "code_version": REGISTRY_CODE_VERSION,
        "dagster_run_id": dagster_run_id,
    }
    return tags | {f"sha256.{name}": digest for name, digest in info.sha256.items()}


def _register(context, mlflow: MlflowTracking, storage: StorageResource, name: str, bundle, info: ModelInfo, tags):
    """The bundle registered (or found registered and its evidence brought up to date) in MLflow, with its model
    risk report attached; (registration, production, candidate, the version holding the bundle), and the local
    view of the registry refreshed (last: the report's writes are part of the state it describes)."""
    from mlflow import MlflowClient

    from fin_behavior.governance.card import ModelCardError
    from fin_behavior.governance.report import ReportError, publish_report
    from fin_behavior.ml import registry, registry_view

    client = MlflowClient(tracking_uri=mlflow.uri)
    registration = registry.already_registered(client, name, info.digest, tags)
    if registration is None:
        with mlflow.start_run(context, storage.mlflow_artifacts):
            registration = registry.register_bundle(client, name, bundle, tags)
        done = "registered" if registration.created else "already registered (evidence tags updated) as"
    else:
        done = "reused: nothing to register, candidate already is"
    if registration.created or not _report_path(storage, name, registration.version).is_file():
        try:
            report = publish_report(client, _settings(storage), name, registration.version, storage.remote)
            context.log.info(f"model risk report of {name} version {registration.version}: {report} (attached)")
        except (ModelCardError, ReportError) as exc:  # the version stands; its report waits for the fix
            context.log.warning(
                f"no model risk report for {name} version {registration.version}: {exc}. Fix it, then run "
                f"`fin-behavior report {name} {registration.version} --attach`"
            )
    production = registry.alias_version(client, name, registry.PRODUCTION)
    context.log.info(
        f"{done} {name} version {registration.version} (candidate); production is {production or 'not set yet'}"
    )
    candidate = registry.alias_version(client, name, registry.CANDIDATE)
    expected = registry.find_version(client, name, info.digest)
    registry_view.refresh(client, storage.root, mlflow.uri, name)
    return registration, production, candidate, expected


def _settings(storage: StorageResource):
    """The settings with this run's state directory (the report reads the stage versions under it)."""
    from fin_behavior.settings import get_settings

    return get_settings().with_overrides(var_dir=storage.root)


def _report_path(storage: StorageResource, name: str, version: str):
    from fin_behavior.governance.report import REPORT_HTML, reports_dir

    return reports_dir(_settings(storage), name, version) / REPORT_HTML


@dg.asset(
    deps=[compatible_model],
    group_name="deployment",
    code_version=REGISTRY_CODE_VERSION,
    check_specs=check_specs(STAGE, _CHECKS),
    description="The approved compatible bundle as a version of the MLflow registered model, aliased `candidate`, "
    "tagged with the evidence of the dataset, model and bundle behind it. Identical content is registered once.",
)
def registered_model_version(
    context: dg.AssetExecutionContext, config: RegistryConfig, storage: StorageResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    from fin_behavior.ml import registry, registry_view
    from fin_behavior.records import TrainingRecord

    name = config.settings().registered_model_name
    bundles = storage.versions("compatible_model")
    if note := bundles.attempt_note():
        context.log.warning(f"compatible_model: {note}")
    try:
        bundle = bundles.current() / BUNDLE_DIR
        info = ModelInfo.read(bundle)
        trained = storage.versions("trained_model")
        evidences = [
            storage.versions("processed_dataset").evidence(info.data_version),
            trained.evidence(info.trained_model_version),
            bundles.evidence(bundles.current_version()),
        ]
        tags = registry.evidence_tags(evidences)
    except NotApprovedError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    record = TrainingRecord.read(trained.path(info.trained_model_version))
    tags |= _provenance(info, context.run.run_id, record.mlflow_run_id)
    # The nothing-changed path: the local view of the registry, valid only while the store is untouched, says
    # candidate already holds this bundle with this evidence; MLflow is not even imported.
    view = registry_view.load(storage.root, mlflow.uri, name)
    candidate = view.alias(registry.CANDIDATE) if view else None
    held = view.tags.get(candidate, {}) if view and candidate else {}
    reused = bool(view and held.get(registry.BUNDLE_TAG) == info.digest and registry.carries(held, tags))
    if view and candidate and reused:  # reused implies a candidate (held is {} without one); named for mypy
        registration, expected = registry.Registration(candidate, created=False), candidate
        production = view.alias(registry.PRODUCTION)
        context.log.info(f"reused {name} version {candidate}: already candidate with this bundle and this evidence")
    else:
        registration, production, candidate, expected = _register(context, mlflow, storage, name, bundle, info, tags)
    report = _report_path(storage, name, registration.version)
    consistent = Outcome(
        candidate is not None and candidate == expected,
        candidate or "none",
        expected or "none",
        f"candidate is version {candidate}; the current bundle is registered as {expected}",
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(info.digest[:16]),
        metadata={
            "model_name": name,
            "version": registration.version,
            "newly_registered": registration.created,
            "reused": reused,  # decided from the local view of an unchanged registry, without MLflow
            "model_uri": f"models:/{name}/{registration.version}",
            "candidate_uri": f"models:/{name}@{registry.CANDIDATE}",
            "production_version": production or "none",
            "evidence": dg.MetadataValue.json({k: v for k, v in tags.items() if k.startswith(("gate.", "evidence."))}),
            "bundle_path": dg.MetadataValue.path(str(bundle)),
            "model_risk_report": dg.MetadataValue.path(str(report)) if report.is_file() else "not written",
            "model_risk_report_json": dg.MetadataValue.path(str(report.with_suffix(".json"))),
        },
        check_results=[
            check_result(dg.AssetCheckKey(dg.AssetKey(STAGE), "candidate_is_current_bundle"), consistent, True)
        ],
    )
