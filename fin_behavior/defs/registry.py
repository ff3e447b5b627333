"""Dagster wiring of the registry stage: the verified bundle becomes an MLflow model version (`candidate`)."""

import dagster as dg

from fin_behavior.defs.checks import check_result, check_specs
from fin_behavior.defs.compatible import compatible_model
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.environments.compatible import MODEL_INFO
from fin_behavior.ml.store import read_json
from fin_behavior.outcome import Outcome
from fin_behavior.settings import get_settings

REGISTRY_CODE_VERSION = "registry-v1"
_settings = get_settings()


class RegistryConfig(dg.Config):
    model_name: str = _settings.registered_model_name


def _tags(info: dict, dagster_run_id: str) -> dict[str, str]:
    tags = {
        "data_version": info["data_version"],
        "environment_fingerprint": info["environment_fingerprint"],
        "serving_environment": info["serving_environment"],
        "runtime": info["runtime"],
        "trained_model_version": info["trained_model_version"],
        "code_version": REGISTRY_CODE_VERSION,
        "dagster_run_id": dagster_run_id,
    }
    return tags | {f"sha256.{name}": digest for name, digest in info["sha256"].items()}


@dg.asset(
    deps=[compatible_model],
    group_name="deployment",
    code_version=REGISTRY_CODE_VERSION,
    description="The compatible bundle as a version of the MLflow registered model, aliased `candidate`. "
    "Identical bundle content is never registered twice.",
)
def registered_model_version(
    context: dg.AssetExecutionContext, config: RegistryConfig, storage: StorageResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    from mlflow import MlflowClient

    from fin_behavior.ml import registry

    bundle = storage.versions("compatible_model").current()
    info = read_json(bundle / MODEL_INFO)
    with mlflow.start_run(context, storage.mlflow_artifacts):
        client = MlflowClient(tracking_uri=mlflow.uri)
        registration = registry.register_bundle(client, config.model_name, bundle, _tags(info, context.run.run_id))
    production = registry.alias_version(client, config.model_name, registry.PRODUCTION)
    context.log.info(
        f"{'registered' if registration.created else 'already registered as'} {config.model_name} "
        f"version {registration.version} (candidate); production is {production or 'not set yet'}"
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(registry.bundle_digest(info)[:16]),
        metadata={
            "model_name": config.model_name,
            "version": registration.version,
            "newly_registered": registration.created,
            "model_uri": f"models:/{config.model_name}/{registration.version}",
            "candidate_uri": f"models:/{config.model_name}@{registry.CANDIDATE}",
            "production_version": production or "none",
            "bundle_path": dg.MetadataValue.path(str(bundle)),
        },
    )


_CHECKS = {"candidate_is_current_bundle": (True, "`candidate` names a version holding exactly the current bundle.")}


@dg.multi_asset_check(specs=check_specs(registered_model_version, _CHECKS))
def registered_model_version_checks(
    context: dg.AssetCheckExecutionContext, storage: StorageResource, mlflow: MlflowTracking
):
    from mlflow import MlflowClient

    from fin_behavior.ml import registry

    info = read_json(storage.versions("compatible_model").current() / MODEL_INFO)
    client = MlflowClient(tracking_uri=mlflow.uri)
    materialization = context.instance.get_latest_materialization_event(registered_model_version.key)
    name = materialization.asset_materialization.metadata["model_name"].value  # as configured for that run
    candidate = registry.alias_version(client, name, registry.CANDIDATE)
    expected = registry.find_version(client, name, registry.bundle_digest(info))
    outcome = Outcome(
        candidate is not None and candidate == expected,
        candidate or "none",
        expected or "none",
        f"candidate is version {candidate}; the current bundle is registered as {expected}",
    )
    for key in context.selected_asset_check_keys:
        yield check_result(key, outcome, blocking=True)
