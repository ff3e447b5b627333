"""What a training run writes to MLflow. Works on the active MLflow run; knows nothing of Dagster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from fin_behavior.ml.train import TrainedModel, TrainingOptions
from fin_behavior.records import Evidence


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def ensure_experiment(name: str, artifact_dir: Path | None) -> str:
    """Create the experiment if needed. With a local store, artifacts go under `artifact_dir` (MLflow's
    default would be ./mlruns in whatever directory the process started in)."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if artifact_dir is None:
        return mlflow.create_experiment(name)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=artifact_dir.resolve().as_uri())


def log_training(
    *,
    pipeline: Pipeline,
    input_example: pd.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    plots: dict[str, Path],
    pip_requirements: list[str],
) -> str:
    """Log params, metrics, tags, plots and the model to the active run; returns the model URI."""
    import mlflow
    from mlflow.models import infer_signature

    mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
    mlflow.log_metrics(metrics)
    mlflow.set_tags(tags)
    for path in plots.values():
        mlflow.log_artifact(str(path), artifact_path="plots")
    signature = infer_signature(input_example, pipeline.predict_proba(input_example))
    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        signature=signature,
        input_example=input_example,
        serialization_format="cloudpickle",  # the default (skops) refuses random forests without a trust list
        pip_requirements=pip_requirements,  # inferring them costs ~12 s a call
    )
    return info.model_uri


def log_training_run(
    model: TrainedModel,
    options: TrainingOptions,
    *,
    metrics: dict[str, float],
    plots: dict[str, Path],
    versions: dict[str, str],
    tags: dict[str, str],
) -> str:
    """Everything a training run records: search space and best parameters, metrics, tags with package
    versions, plots and the model."""
    params = {f"best.{k}": v for k, v in model.search.best_params.items()}
    params |= {f"space.{k}": v for k, v in options.space.describe().items()}
    params["decision_threshold"] = model.search.decision_threshold
    params |= {
        "n_iter": options.n_iter,
        "cv": options.cv,
        "search_rows": model.search.search_rows,
        "train_rows": len(model.split.x_train),
        "test_rows": len(model.split.x_test),
    }
    return log_training(
        pipeline=model.pipeline,
        input_example=model.split.x_test.head(5),
        params=params,
        metrics=metrics | {"best_cv_roc_auc": model.search.best_cv_roc_auc},
        tags=tags | {f"version.{k}": v for k, v in versions.items()},
        plots=plots,
        pip_requirements=[f"{name}=={v}" for name, v in versions.items() if name != "python" and v[0].isdigit()],
    )


def evidence_tags(evidence: Evidence) -> dict[str, str]:
    """The verdicts as run tags: `gates` passed or failed, and one `gate.<check>` tag each, so a failed attempt is
    marked as such in the MLflow UI and the registry can carry the evidence of the versions it holds."""
    tags = {"gates": "passed" if evidence.approved else "failed"}
    for v in evidence.verdicts:
        tags[f"gate.{v.check}"] = f"{'passed' if v.passed else 'FAILED'}: {v.message}"[:4_000]
    return tags
