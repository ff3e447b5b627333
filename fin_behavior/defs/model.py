"""Dagster wiring of the model stage: search, fit, evaluate, track in MLflow, gate."""

import base64
import hashlib
import json
from pathlib import Path

import dagster as dg
import pandas as pd

from fin_behavior.defs.checks import check_result, check_specs
from fin_behavior.defs.dataset import processed_dataset
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.ml import gates
from fin_behavior.ml.store import EVALUATION_FILE, HOLDOUT_FILE, MODEL_FILE, read_json, write_json
from fin_behavior.settings import get_settings

MODEL_CODE_VERSION = "trained-v1"
MLFLOW_UI_URL = "http://127.0.0.1:5000"  # `make mlflow-ui`
_settings = get_settings()


class TrainingConfig(dg.Config):
    """Search as in the seeds (ranges are inclusive [low, high]) and the quality gates."""

    n_iter: int = _settings.n_iter
    cv: int = _settings.cv
    search_max_rows: int = _settings.search_max_rows
    test_size: float = 0.2
    random_state: int = 42
    n_estimators: list[int] = [50, 200]
    max_depth: list[int] = [3, 20]
    min_samples_split: list[int] = [2, 20]
    min_samples_leaf: list[int] = [1, 20]
    bootstrap: list[bool] = [True, False]
    class_weight: list[str] = ["balanced", "balanced_subsample", "none"]
    min_roc_auc: float = _settings.min_roc_auc
    min_accuracy: float = _settings.min_accuracy
    min_balanced_accuracy_margin: float = _settings.min_balanced_accuracy_margin
    max_latency_ms: float = _settings.max_latency_ms

    def training_fields(self) -> dict:
        gate_fields = {"min_roc_auc", "min_accuracy", "min_balanced_accuracy_margin", "max_latency_ms"}
        return {k: v for k, v in self.model_dump().items() if k not in gate_fields}

    def gate_fields(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if k not in self.training_fields()}


def _options(config: TrainingConfig):
    from fin_behavior.ml.train import SearchSpace, TrainingOptions

    ranges = {}
    for name in ("n_estimators", "max_depth", "min_samples_split", "min_samples_leaf"):
        low_high = getattr(config, name)
        if len(low_high) != 2 or low_high[0] > low_high[1] or low_high[0] < 1:
            raise dg.Failure(f"config {name} must be [low, high] with 1 <= low <= high, got {low_high}")
        ranges[name] = (low_high[0], low_high[1])
    weights = tuple(None if w == "none" else w for w in config.class_weight)
    space = SearchSpace(**ranges, bootstrap=tuple(config.bootstrap), class_weight=weights)
    return TrainingOptions(
        n_iter=config.n_iter,
        cv=config.cv,
        test_size=config.test_size,
        random_state=config.random_state,
        search_max_rows=config.search_max_rows,
        space=space,
    )


def _model_version(data_version: str, config: TrainingConfig, sklearn_version: str) -> str:
    """Same data, code, settings and library -> same version, so an identical retrain keeps children fresh."""
    key = json.dumps([data_version, MODEL_CODE_VERSION, config.training_fields(), sklearn_version], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _png(path: Path) -> str:
    return f"![{path.stem}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"


def _metrics_table(metrics: dict[str, float]) -> str:
    from fin_behavior.ml.evaluate import METRICS

    rows = [f"| {m} | {metrics[m]:.4f} | {metrics[f'baseline_{m}']:.4f} |" for m in METRICS]
    return "| metric | model | majority baseline |\n|---|---:|---:|\n" + "\n".join(rows)


def _run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    base = tracking_uri if tracking_uri.startswith("http") else MLFLOW_UI_URL
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


@dg.asset(
    deps=[processed_dataset],
    group_name="model",
    code_version=MODEL_CODE_VERSION,
    description="scikit-learn Pipeline (impute, scale, one-hot, random forest) from a randomized search, "
    "evaluated on a stratified hold-out against the majority baseline and tracked in MLflow.",
)
def trained_model(
    context: dg.AssetExecutionContext, config: TrainingConfig, storage: StorageResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    import joblib
    import sklearn

    from fin_behavior.data.processing import dataset_version
    from fin_behavior.ml import evaluate, plots, tracking, train

    options = _options(config)
    dataset = pd.read_parquet(storage.fetch_file(storage.processed_path))
    data_version = dataset_version(dataset)
    version = _model_version(data_version, config, sklearn.__version__)
    store = storage.versions("trained_model")
    staging = store.staging(version)

    with mlflow.start_run(context, storage.mlflow_artifacts) as run:
        try:
            model = train.train(dataset, options, context.log.info)
        except ValueError as exc:
            raise dg.Failure(description=f"training failed: {exc}", allow_retries=False) from None
        proba = model.pipeline.predict_proba(model.split.x_test)[:, 1]
        metrics = evaluate.holdout_metrics(model.split.y_test, proba)
        latency = evaluate.single_row_latency_ms(model.pipeline.predict_proba, model.split.x_test)
        plot_paths = plots.write_evaluation_plots(model.pipeline, model.split.y_test, proba, staging / "plots")
        versions = tracking.package_versions()
        model_uri = tracking.log_training_run(
            model,
            options,
            metrics=metrics | latency,
            plots=plot_paths,
            versions=versions,
            tags={
                "dagster_run_id": context.run.run_id,
                "data_version": data_version,
                "code_version": MODEL_CODE_VERSION,
                "model_version": version,
                "git_commit": tracking.git_commit(Path(__file__).resolve().parents[2]),
            },
        )

    joblib.dump(model.pipeline, staging / MODEL_FILE)
    pd.DataFrame({"transaction_id": model.split.test_ids}).to_parquet(staging / HOLDOUT_FILE, index=False)
    evaluation = {
        "version": version,
        "data_version": data_version,
        "metrics": metrics,
        "latency": latency,
        "gates": config.gate_fields(),
        "best_params": model.search.best_params,
        "best_cv_roc_auc": model.search.best_cv_roc_auc,
        "training": config.training_fields(),
        "mlflow": {
            "run_id": run.run_id,
            "experiment_id": run.experiment_id,
            "model_uri": model_uri,
            "tracking_uri": mlflow.uri,
        },
        "package_versions": versions,
        "search_seconds": model.search.seconds,
        "fit_seconds": model.fit_seconds,
    }
    write_json(staging / EVALUATION_FILE, evaluation)
    final = store.publish(staging, version)

    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "roc_auc": metrics["roc_auc"],
            "pr_auc": metrics["pr_auc"],
            "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "latency_p95_ms": latency["latency_p95_ms"],
            "metrics_vs_baseline": dg.MetadataValue.md(_metrics_table(metrics)),
            "best_params": dg.MetadataValue.json(model.search.best_params),
            "best_cv_roc_auc": round(model.search.best_cv_roc_auc, 4),
            "search": f"{options.n_iter} candidates x {options.cv} folds on {model.search.search_rows} rows "
            f"in {model.search.seconds:.1f} s; final fit on {len(model.split.x_train)} rows in "
            f"{model.fit_seconds:.1f} s",
            "plots": dg.MetadataValue.md("\n\n".join(_png(final / "plots" / p.name) for p in plot_paths.values())),
            "mlflow_run_id": run.run_id,
            "mlflow_run": dg.MetadataValue.url(_run_link(mlflow.uri, run.experiment_id, run.run_id)),
            "mlflow_model_uri": model_uri,
            "model_path": dg.MetadataValue.path(str(final / MODEL_FILE)),
            "data_version": data_version,
            "model_version": version,
        },
    )


_GATES = {
    "roc_auc_gate": (True, "Hold-out ROC-AUC >= min_roc_auc."),
    "accuracy_gate": (True, "Accuracy >= min_accuracy and balanced accuracy beats the majority baseline."),
    "latency_gate": (True, "Single-row prediction p95 latency (in process) <= max_latency_ms."),
}


@dg.multi_asset_check(specs=check_specs(trained_model, _GATES), can_subset=True)
def trained_model_gates(context: dg.AssetCheckExecutionContext, storage: StorageResource):
    evaluation = read_json(storage.versions("trained_model").current() / EVALUATION_FILE)
    metrics, thresholds = evaluation["metrics"], evaluation["gates"]
    outcomes = {
        "roc_auc_gate": lambda: gates.roc_auc_gate(metrics, thresholds["min_roc_auc"]),
        "accuracy_gate": lambda: gates.accuracy_gate(
            metrics, thresholds["min_accuracy"], thresholds["min_balanced_accuracy_margin"]
        ),
        "latency_gate": lambda: gates.latency_gate(evaluation["latency"], thresholds["max_latency_ms"]),
    }
    for key in context.selected_asset_check_keys:
        yield check_result(key, outcomes[key.name](), blocking=_GATES[key.name][0])
