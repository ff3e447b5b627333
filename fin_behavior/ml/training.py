"""The trained_model stage as plain code: train one version on the approved dataset, judge it with its gates,
record it in the active MLflow run (a failed attempt is tagged `gates: failed`), and publish it with its
evidence. Only an approved version becomes current; a failed one stays inspectable under its version.

Light at import: naming a version and finding it already published (the nothing-changed path of every run)
needs neither scikit-learn nor pandas; `train_version` imports them when there is training to do."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING

from fin_behavior.ml import gates
from fin_behavior.ml.options import TrainingOptions
from fin_behavior.records import Evidence, TrainingRecord
from fin_behavior.settings import Settings
from fin_behavior.storage.store import VersionStore

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import RunInfo

MODEL_FILE = "model.joblib"  # the whole pipeline as trained (scaler included)
HOLDOUT_FILE = "holdout_ids.parquet"  # the hold-out's transaction ids: later stages split exactly the same way
PLOTS_DIR = "plots"


def version_of(data_version: str, settings: Settings) -> str:
    """Same data, code, training settings, library and gate thresholds -> same version: an identical retrain
    is not repeated and keeps everything downstream fresh."""
    key = [
        data_version,
        gates.CODE_VERSION,
        TrainingOptions.from_settings(settings).describe(),
        installed_version("scikit-learn"),  # sklearn.__version__, without importing it
        gates.thresholds(settings),
    ]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def train_version(
    dataset: pd.DataFrame,
    data_version: str,
    settings: Settings,
    store: VersionStore,
    run: RunInfo,
    tags: dict[str, str],
    progress: Callable[[str], None],
) -> tuple[TrainingRecord, Evidence]:
    """Train, evaluate, judge, log to the active MLflow run `run`, and publish; returns what was published."""
    import joblib
    import pandas as pd

    from fin_behavior.ml import evaluate, plots, tracking
    from fin_behavior.ml.fairness import assess_fairness, fairness_metrics, write_fairness_plot
    from fin_behavior.ml.train import train
    from fin_behavior.package_versions import model_package_versions

    options = TrainingOptions.from_settings(settings)
    version = version_of(data_version, settings)
    staging = store.staging(version)
    try:
        model = train(dataset, options, progress)
    except ValueError as exc:
        raise TrainingError(f"training failed: {exc}") from None
    threshold = model.search.decision_threshold
    proba = model.pipeline.predict_proba(model.split.x_test)[:, 1]
    metrics = evaluate.holdout_metrics(model.split.y_test, proba, threshold)
    latency = evaluate.single_row_latency_ms(model.pipeline.predict_proba, model.split.x_test)
    progress("fairness: the hold-out's selections by protected group, with bootstrap intervals")
    fair = assess_fairness(model.split.x_test, model.split.y_test, proba, threshold, settings)
    evidence = gates.judge(version, metrics, latency, fair, settings)
    plot_paths = plots.write_evaluation_plots(model.pipeline, model.split.y_test, proba, threshold, staging / PLOTS_DIR)
    plot_paths["fairness"] = write_fairness_plot(fair, staging / PLOTS_DIR / "fairness.png")
    fair.write(staging)
    versions = model_package_versions()
    model_uri = tracking.log_training_run(
        model,
        options,
        metrics=metrics | latency | {"decision_threshold": threshold} | fairness_metrics(fair),
        plots=plot_paths,
        versions=versions,
        tags=tags | {"data_version": data_version, "model_version": version} | tracking.evidence_tags(evidence),
    )
    joblib.dump(model.pipeline, staging / MODEL_FILE)
    pd.DataFrame({"transaction_id": model.split.test_ids}).to_parquet(staging / HOLDOUT_FILE, index=False)
    record = TrainingRecord(
        version=version,
        data_version=data_version,
        decision_threshold=threshold,
        metrics=metrics,
        latency=latency,
        best_params=model.search.best_params,
        best_cv_roc_auc=model.search.best_cv_roc_auc,
        training=options.describe(),
        package_versions=versions,
        mlflow_run_id=run.run_id,
        mlflow_experiment_id=run.experiment_id,
        mlflow_model_uri=model_uri,
        mlflow_tracking_uri=tracking.tracking_uri(),
        search_seconds=round(model.search.seconds, 3),
        fit_seconds=round(model.fit_seconds, 3),
    )
    record.write(staging)
    store.publish(staging, evidence)
    return record, evidence


class TrainingError(RuntimeError):
    """Training could not produce a model from this data; nothing was published."""


def plot_paths(version_dir: Path) -> list[Path]:
    return sorted((version_dir / PLOTS_DIR).glob("*.png"))
