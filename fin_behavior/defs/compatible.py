"""Dagster wiring of the compatibility stage: environments as observable sources, compatible_model, checks."""

import hashlib
import json
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from fin_behavior.defs.checks import check_result, check_specs
from fin_behavior.defs.model import trained_model
from fin_behavior.defs.resources import StorageResource
from fin_behavior.environments import builder, compatible
from fin_behavior.environments.report import training_versions, versions_fingerprint
from fin_behavior.environments.spec import EnvironmentSpecError, get_spec
from fin_behavior.environments.verify import cached_resolution, environment_report
from fin_behavior.ml.store import EVALUATION_FILE, HOLDOUT_FILE, MODEL_FILE, read_json, write_json
from fin_behavior.outcome import Outcome
from fin_behavior.settings import get_settings

COMPATIBLE_CODE_VERSION = "compatible-v2"
GATES_FILE = "gates.json"  # check thresholds of the latest materialization; not part of the bundle
_settings = get_settings()


def _spec(name: str):
    try:
        return get_spec(name, get_settings().serving_environments_file)
    except EnvironmentSpecError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None


def _resolution(spec, storage: StorageResource) -> builder.Resolution:
    """The one resolution of `spec` that observation, build and checks share (cached per spec digest)."""
    try:
        return cached_resolution(spec, storage.resolution_cache, get_settings().resolution_max_age_seconds)
    except builder.EnvironmentBuildError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None


@dg.observable_source_asset(
    group_name="environments",
    description="Python and ML package versions installed where training runs; data version = their fingerprint.",
)
def training_environment() -> dg.ObserveResult:
    versions = training_versions()
    return dg.ObserveResult(
        data_version=dg.DataVersion(versions_fingerprint(versions)),
        metadata={"versions": dg.MetadataValue.json(versions)},
    )


@dg.observable_source_asset(
    group_name="environments",
    description="The serving environment spec as it "
    "resolves today; data version = fingerprint of Python and the resolved packages.",
)
def serving_environment(storage: StorageResource) -> dg.ObserveResult:
    spec = _spec(get_settings().serving_environment)
    resolution = _resolution(spec, storage)
    return dg.ObserveResult(
        data_version=dg.DataVersion(resolution.fingerprint),
        metadata={"name": spec.name, "runtime": spec.runtime, "resolved": dg.MetadataValue.json(resolution.versions())},
    )


class CompatibleModelConfig(dg.Config):
    serving_environment: str = _settings.serving_environment
    parity_tolerance: float = _settings.parity_tolerance


@dg.asset(
    deps=[trained_model, training_environment, serving_environment],
    group_name="model",
    code_version=COMPATIBLE_CODE_VERSION,
    description="The trained model rebuilt with the serving environment's libraries (when they differ), "
    "exported to ONNX for the onnx runtime, verified inside that environment, with model_info.json.",
)
def compatible_model(
    context: dg.AssetExecutionContext, config: CompatibleModelConfig, storage: StorageResource
) -> dg.MaterializeResult:
    spec = _spec(config.serving_environment)
    try:
        env = builder.build(spec, storage.environments, _resolution(spec, storage))
    except builder.EnvironmentBuildError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    trained_dir = storage.versions("trained_model").current()
    evaluation = read_json(trained_dir / EVALUATION_FILE)
    trained = compatible.TrainedInputs(
        model_path=trained_dir / MODEL_FILE,
        best_params=evaluation["best_params"],
        random_state=evaluation["training"]["random_state"],
        sklearn_version=evaluation["package_versions"]["scikit-learn"],
        trained_version=evaluation["version"],
        data_version=evaluation["data_version"],
        roc_auc=evaluation["metrics"]["roc_auc"],
    )
    context.log.info(
        f"serving environment {spec.name} ({env.fingerprint}) has scikit-learn "
        f"{env.version_of('scikit-learn')}; training used {trained.sklearn_version}"
    )
    key = json.dumps([trained.trained_version, env.fingerprint, COMPATIBLE_CODE_VERSION])
    version = hashlib.sha256(key.encode()).hexdigest()[:16]

    store = storage.versions("compatible_model")
    reused = store.published(version, compatible.MODEL_INFO, compatible.VERIFICATION, compatible.EXPECTED)
    if reused:
        # Same trained model, same serving environment, same code: the bundle is already built and verified.
        # Reusing it keeps its bytes (and sha256s) identical, so the registry sees the same content.
        context.log.info(f"bundle {version} already built for these inputs; reusing it")
        final = store.activate(version)
        report = read_json(final / compatible.VERIFICATION)
        info = read_json(final / compatible.MODEL_INFO)
    else:
        dataset = pd.read_parquet(storage.fetch_file(storage.processed_path))
        holdout = pd.read_parquet(trained_dir / HOLDOUT_FILE)["transaction_id"]
        staging = store.staging(version)
        storage.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=storage.scratch) as work:
            try:
                report = compatible.build_bundle(env, trained, dataset, holdout, Path(work))
            except compatible.ServingTaskError as exc:
                raise dg.Failure(str(exc), allow_retries=False) from None
            compatible.copy_bundle(Path(work) / "bundle", staging)
        info = compatible.model_info(env, trained, report, staging)
        compatible.write_model_info(info, staging)
        final = store.publish(staging, version)
    write_json(final / GATES_FILE, {"trained_roc_auc": trained.roc_auc, "parity_tolerance": config.parity_tolerance})
    original = report["artifacts"]["original_training_pickle"]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "serving_environment": spec.name,
            "runtime": spec.runtime,
            "environment_fingerprint": env.fingerprint,
            "sklearn_training": trained.sklearn_version,
            "sklearn_serving": env.version_of("scikit-learn") or "?",
            "refit_in_serving_environment": report["refit"],
            "reused_existing_bundle": reused,
            "training_pickle_in_serving_env": "loads cleanly" if original["loads_cleanly"] else original["error"][:500],
            "artifacts_sha256": dg.MetadataValue.json(info["sha256"]),
            "bundle_path": dg.MetadataValue.path(str(final)),
            "model_version": version,
        },
    )


_CHECKS = {
    "loads_cleanly": (True, "Every artifact loads in the serving environment with warnings as errors."),
    "quality_parity": (True, "Serving ROC-AUC within parity_tolerance of the trained model's."),
    "onnx_parity": (True, "ONNX probabilities within 1e-4 of joblib's; labels agree on >= 99.9% of rows."),
    "environment_consistency": (False, "Project pins, training env, bundle and serving spec agree (verify-env)."),
}


@dg.multi_asset_check(specs=check_specs(compatible_model, _CHECKS), can_subset=True)
def compatible_model_checks(context: dg.AssetCheckExecutionContext, storage: StorageResource):
    bundle = storage.versions("compatible_model").current()
    report = read_json(bundle / compatible.VERIFICATION)
    info = read_json(bundle / compatible.MODEL_INFO)
    gates = read_json(bundle / GATES_FILE)

    def consistency():
        built_for = _spec(info["serving_environment"])
        env_report = environment_report(get_settings(), info, _resolution(built_for, storage))
        problems = "; ".join(f"{p} -> {fix}" for p, fix in env_report.problems)
        return Outcome(env_report.ok, len(env_report.problems), 0, problems or "all versions agree")

    outcomes = {
        "loads_cleanly": lambda: compatible.loads_cleanly(report),
        "quality_parity": lambda: compatible.quality_parity(
            report, gates["trained_roc_auc"], gates["parity_tolerance"]
        ),
        "onnx_parity": lambda: compatible.onnx_parity(report),
        "environment_consistency": consistency,
    }
    for key in context.selected_asset_check_keys:
        yield check_result(key, outcomes[key.name](), blocking=_CHECKS[key.name][0])
