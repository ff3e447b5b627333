"""Dagster wiring of the model stage: train on the approved dataset, judge, track in MLflow, publish."""

from pathlib import Path

import dagster as dg

from fin_behavior.defs.checks import check_specs, evidence_results, lifecycle
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.dataset import processed_dataset
from fin_behavior.defs.metadata import png_markdown
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.ml.fairness_record import fairness_table
from fin_behavior.ml.gates import CODE_VERSION, GATES, STAGE
from fin_behavior.records import NotApprovedError, TrainingRecord

MLFLOW_UI_URL = "http://127.0.0.1:5000"  # `make mlflow-ui`


class TrainingConfig(SettingsConfig):
    """The seeds' search (ranges are inclusive [low, high]) and the quality gates; empty = the setting."""

    n_iter: int | None = setting("n_iter")
    cv: int | None = setting("cv")
    search_max_rows: int | None = setting("search_max_rows")
    test_size: float | None = setting("test_size")
    random_state: int | None = setting("random_state")
    n_estimators: list[int] | None = setting("n_estimators")
    max_depth: list[int] | None = setting("max_depth")
    min_samples_split: list[int] | None = setting("min_samples_split")
    min_samples_leaf: list[int] | None = setting("min_samples_leaf")
    bootstrap: list[bool] | None = setting("bootstrap")
    class_weight: list[str] | None = setting("class_weight")
    min_roc_auc: float | None = setting("min_roc_auc")
    min_accuracy: float | None = setting("min_accuracy")
    min_balanced_accuracy_margin: float | None = setting("min_balanced_accuracy_margin")
    max_latency_ms: float | None = setting("max_latency_ms")
    protected_attributes: list[str] | None = setting("protected_attributes")
    protected_features: list[str] | None = setting("protected_features")
    age_bands: list[int] | None = setting("age_bands")
    fairness_judged_attributes: list[str] | None = setting("fairness_judged_attributes")
    min_selection_rate_ratio: float | None = setting("min_selection_rate_ratio")
    max_equalized_odds_difference: float | None = setting("max_equalized_odds_difference")
    fairness_min_group_size: int | None = setting("fairness_min_group_size")
    fairness_bootstrap_samples: int | None = setting("fairness_bootstrap_samples")


def _metrics_table(metrics: dict[str, float]) -> str:
    """Every metric the record holds with its baseline, in the record's order (ml/evaluate.py's)."""
    pairs = [m for m in metrics if f"baseline_{m}" in metrics]
    rows = [f"| {m} | {metrics[m]:.4f} | {metrics[f'baseline_{m}']:.4f} |" for m in pairs]
    return "| metric | model | majority baseline |\n|---|---:|---:|\n" + "\n".join(rows)


def _run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    base = tracking_uri if tracking_uri.startswith("http") else MLFLOW_UI_URL
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


@dg.asset(
    deps=[processed_dataset],
    group_name="model",
    code_version=CODE_VERSION,
    check_specs=check_specs(STAGE, GATES),
    description="scikit-learn Pipeline (impute, scale, one-hot, random forest) from a randomized search on the "
    "approved dataset, with a decision threshold chosen out of fold, evaluated on a stratified hold-out against "
    "the majority baseline, tracked in MLflow and published with the verdicts of its gates.",
)
def trained_model(
    context: dg.AssetExecutionContext, config: TrainingConfig, storage: StorageResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    from fin_behavior.ml import training  # light: scikit-learn, pandas and MLflow only when there is training to do

    settings = config.settings()
    datasets = storage.versions("processed_dataset")
    if note := datasets.attempt_note():
        context.log.warning(f"processed_dataset: {note}")
    try:
        data_version = datasets.current_version()
        datasets.approved(data_version)
    except NotApprovedError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    store = storage.versions(STAGE)
    version = training.version_of(data_version, settings)
    if store.published(version):
        context.log.info(f"reused trained model {version}: already trained and judged for exactly these inputs")
        record, evidence = TrainingRecord.read(store.path(version)), store.reuse(version)
    else:
        from fin_behavior.data.processing import read_dataset
        from fin_behavior.ml import tracking

        _, dataset = read_dataset(datasets, data_version)
        with mlflow.start_run(context, storage.mlflow_artifacts) as run:
            tags = {
                "dagster_run_id": context.run.run_id,
                "code_version": CODE_VERSION,
                "git_commit": tracking.git_commit(Path(__file__).resolve().parents[2]),
            }
            try:
                record, evidence = training.train_version(
                    dataset, data_version, settings, store, run, tags, context.log.info
                )
            except training.TrainingError as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
    final = store.path(version)
    metrics = record.metrics
    current, lifecycle_metadata = lifecycle(store, evidence)
    return dg.MaterializeResult(
        data_version=current,
        metadata=lifecycle_metadata
        | {
            "roc_auc": metrics["roc_auc"],
            "pr_auc": metrics["pr_auc"],
            "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "decision_threshold": record.decision_threshold,
            "latency_p95_ms": record.latency["latency_p95_ms"],
            "metrics_vs_baseline": dg.MetadataValue.md(_metrics_table(metrics)),
            "best_params": dg.MetadataValue.json(record.best_params),
            "best_cv_roc_auc": round(record.best_cv_roc_auc, 4),
            "search": f"{record.training['n_iter']} candidates x {record.training['cv']} folds in "
            f"{record.search_seconds:.1f} s; final fit in {record.fit_seconds:.1f} s",
            "fairness": dg.MetadataValue.md(fairness_table(final)),
            "plots": png_markdown(training.plot_paths(final)),
            "mlflow_run_id": record.mlflow_run_id,
            "mlflow_run": dg.MetadataValue.url(
                _run_link(record.mlflow_tracking_uri, record.mlflow_experiment_id, record.mlflow_run_id)
            ),
            "mlflow_model_uri": record.mlflow_model_uri,
            "model_path": dg.MetadataValue.path(str(final / training.MODEL_FILE)),
            "data_version": data_version,
            "model_version": version,
        },
        check_results=evidence_results(STAGE, evidence),
    )
