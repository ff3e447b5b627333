"""Dagster wiring of the compatibility stage: environments as observable sources and compatible_model, built
from the approved trained model and published with the verdicts of its checks."""

import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from fin_behavior.defs.checks import check_result, check_specs, evidence_results, lifecycle
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.metadata import png_markdown
from fin_behavior.defs.model import trained_model
from fin_behavior.defs.resources import StorageResource
from fin_behavior.environments import builder, compatible
from fin_behavior.environments.report import versions_fingerprint
from fin_behavior.environments.spec import EnvironmentSpecError, get_spec
from fin_behavior.environments.verification import VerificationReport, read_report
from fin_behavior.environments.verify import cached_resolution, environment_report
from fin_behavior.outcome import Outcome
from fin_behavior.package_versions import model_package_versions
from fin_behavior.records import BundleFiles, ModelInfo, NotApprovedError, TrainingRecord
from fin_behavior.settings import Settings, get_settings


def _spec(name: str, settings: Settings):
    try:
        return get_spec(name, settings.serving_environments_file)
    except EnvironmentSpecError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None


def _resolution(spec, storage: StorageResource, settings: Settings) -> builder.Resolution:
    """The one resolution of `spec` that observation, build and checks share (cached per spec digest)."""
    try:
        return cached_resolution(spec, storage.resolution_cache, settings.resolution_max_age_seconds)
    except builder.EnvironmentBuildError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None


@dg.observable_source_asset(
    group_name="environments",
    description="Python and the model packages installed where training runs; data version = their fingerprint.",
)
def training_environment() -> dg.ObserveResult:
    versions = model_package_versions()
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
    settings = get_settings()
    spec = _spec(settings.serving_environment, settings)
    resolution = _resolution(spec, storage, settings)
    return dg.ObserveResult(
        data_version=dg.DataVersion(resolution.fingerprint),
        metadata={"name": spec.name, "runtime": spec.runtime, "resolved": dg.MetadataValue.json(resolution.versions())},
    )


class CompatibleModelConfig(SettingsConfig):
    serving_environment: str | None = setting("serving_environment")
    parity_tolerance: float | None = setting("parity_tolerance")


@dg.asset(
    deps=[trained_model, training_environment, serving_environment],
    group_name="model",
    code_version=compatible.CODE_VERSION,
    check_specs=check_specs(compatible.STAGE, compatible.CHECKS | compatible.CONSISTENCY_CHECK),
    description="The approved trained model rebuilt with the serving environment's libraries (when they differ), "
    "exported to ONNX for the onnx runtime, verified inside that environment, with model_info.json; published "
    "with the verdicts of its checks.",
)
def compatible_model(
    context: dg.AssetExecutionContext, config: CompatibleModelConfig, storage: StorageResource
) -> dg.MaterializeResult:
    settings = config.settings()
    spec = _spec(settings.serving_environment, settings)
    resolution = _resolution(spec, storage, settings)
    trained_store = storage.versions("trained_model")
    if note := trained_store.attempt_note():
        context.log.warning(f"trained_model: {note}")
    try:
        trained_dir = trained_store.current()
        env = builder.build(spec, storage.environments, resolution)
    except NotApprovedError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    except builder.EnvironmentBuildError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    record = TrainingRecord.read(trained_dir)
    from fin_behavior.ml.training import HOLDOUT_FILE, MODEL_FILE  # lazy: scikit-learn

    trained = compatible.TrainedInputs.of(record, trained_dir / MODEL_FILE)
    context.log.info(
        f"serving environment {spec.name} ({env.fingerprint}) has scikit-learn "
        f"{env.version_of('scikit-learn')}; training used {trained.sklearn_version}"
    )
    store = storage.versions(compatible.STAGE)
    version = compatible.version_of(trained, env.fingerprint, settings)
    reused = store.published(version)
    if reused:
        # Same trained model, serving environment, code and tolerance: built, verified and judged already.
        context.log.info(f"bundle {version} already built and judged for these inputs; reusing it")
        evidence = store.reuse(version)
    else:
        from fin_behavior.data.processing import read_dataset, read_raw_inputs

        datasets = storage.versions("processed_dataset")
        _, dataset = read_dataset(datasets, record.data_version)
        raw_inputs = read_raw_inputs(datasets, record.data_version)
        holdout = pd.read_parquet(trained_dir / HOLDOUT_FILE)["transaction_id"]
        try:
            evidence = compatible.build_version(
                env, trained, dataset, holdout, store, settings, storage.scratch, raw_inputs
            )
        except compatible.ServingTaskError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None
    final = store.path(version)
    info = ModelInfo.read(final / compatible.BUNDLE_DIR)
    report = read_report(final)
    env_report = environment_report(settings, info, resolution)
    problems = "; ".join(f"{p} -> {fix}" for p, fix in env_report.problems)
    consistency = check_result(
        dg.AssetCheckKey(dg.AssetKey(compatible.STAGE), "environment_consistency"),
        Outcome(env_report.ok, len(env_report.problems), 0, problems or "all versions agree"),
        blocking=False,
    )
    current, lifecycle_metadata = lifecycle(store, evidence)
    original = report["artifacts"]["original_training_pickle"]
    return dg.MaterializeResult(
        data_version=current,
        metadata=lifecycle_metadata
        | _global_importance(report)
        | {
            "serving_environment": spec.name,
            "runtime": spec.runtime,
            "environment_fingerprint": env.fingerprint,
            "sklearn_training": trained.sklearn_version,
            "sklearn_serving": env.version_of("scikit-learn") or "?",
            "refit_in_serving_environment": report["refit"],
            "reused_existing_bundle": reused,
            "training_pickle_in_serving_env": (
                "loads cleanly" if original["loads_cleanly"] else (original["error"] or "")[:500]
            ),
            "artifacts_sha256": dg.MetadataValue.json(info.sha256),
            "bundle_path": dg.MetadataValue.path(str(final / compatible.BUNDLE_DIR)),
            "served_artifact": BundleFiles.served(spec.runtime),
            "model_version": version,
        },
        check_results=[*evidence_results(compatible.STAGE, evidence), consistency],
    )


def _global_importance(report: VerificationReport) -> dict[str, Any]:
    """The version's global view (shipped in its bundle as global_importance.json): a plot and the figures."""
    importance = report["global_importance"]
    if "columns" not in importance:
        return {"global_importance": importance.get("unavailable", "not computed for this bundle")}
    from fin_behavior.ml import plots  # lazy: matplotlib

    with tempfile.TemporaryDirectory() as tmp:
        png = plots.global_importance_bars(importance["columns"], Path(tmp) / "global.png", importance["rows"])
        return {
            "global_importance": dg.MetadataValue.json({k: round(v, 5) for k, v in importance["columns"].items()}),
            "global_importance_plot": png_markdown([png]),
        }
