"""trained_model through Dagster with a real MLflow SQLite store: tracking, lifecycle and gates."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fin_behavior.data.processing import DATASET_FILE
from fin_behavior.defs.dataset import ground_truth, processed_dataset, raw_transactions
from fin_behavior.defs.model import trained_model
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.ml import evaluate
from fin_behavior.storage.store import VersionStore
from fin_behavior_tests.helpers import FAST_TRAINING as FAST
from fin_behavior_tests.helpers import dagster_instance

EXPERIMENT = "test-experiment"


@dg.asset(deps=[trained_model])
def model_consumer() -> None:
    """Stands in for the next stage: must never run behind a failed gate."""


def _materialize(instance, var: Path, raw: Path | None = None, **training):
    resources = {
        "storage": StorageResource(var_dir=str(var), raw_data_path=str(raw or "")),
        "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{var}/mlflow.db", experiment_name=EXPERIMENT),
    }
    return dg.materialize(
        [raw_transactions, ground_truth, processed_dataset, trained_model, model_consumer],
        instance=instance,
        resources=resources,
        run_config={"ops": {"trained_model": {"config": FAST | training}}},
        selection=dg.AssetSelection.all(include_sources=True),
        raise_on_error=False,
    )


def _runs(var: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{var}/mlflow.db")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _gates(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["trained_model"]}


@pytest.fixture
def instance():
    with dagster_instance() as inst:
        yield inst


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(instance, state directory) of one platform for the module: the tests that need an approved model to
    begin with take first_run's (they run after it, in order) instead of training one each."""
    var = tmp_path_factory.mktemp("var")
    with dagster_instance() as inst:
        yield inst, var


@pytest.fixture(scope="module")
def first_run(trained):
    """Three runs in one process: defaults, another seed (a new version), the defaults again (the same)."""
    inst, var = trained

    def latest():
        return inst.get_latest_materialization_event(dg.AssetKey("trained_model")).asset_materialization

    result = _materialize(inst, var)
    event = latest()
    second = _materialize(inst, var, random_state=7)
    third = _materialize(inst, var)
    event3 = latest()
    return var, result, event, second, event3, third


def test_trains_passes_gates_and_feeds_downstream(first_run):
    _, result, materialization, *_ = first_run
    assert result.success
    assert all(g.passed for g in _gates(result).values()), {k: g.description for k, g in _gates(result).items()}
    assert set(_gates(result)) == {
        "roc_auc_gate",
        "accuracy_gate",
        "latency_gate",
        "selection_rate_ratio",
        "equalized_odds_difference",
    }
    assert result.output_for_node("model_consumer") is None  # it ran
    meta = materialization.metadata
    assert 0.75 <= meta["roc_auc"].value <= 0.95
    assert "| accuracy |" in meta["metrics_vs_baseline"].value and "0.9500" in meta["metrics_vs_baseline"].value
    assert meta["plots"].value.count("data:image/png;base64,") == 6  # with calibration and fairness
    assert "| gender | Female |" in meta["fairness"].value and "| age | <25 |" in meta["fairness"].value
    assert meta["mlflow_run"].value.endswith(meta["mlflow_run_id"].value)
    assert materialization.tags["dagster/code_version"] == "trained-v3"
    assert 0 < meta["decision_threshold"].value < 1 and meta["approved"].value is True
    assert Path(meta["model_path"].value).exists()


def test_one_finished_mlflow_run_per_trained_version_with_evidence(first_run):
    var, result, materialization, second, *_ = first_run
    runs = _runs(var)
    assert len(runs) == 2  # two versions trained by two Dagster runs in one process: never a shared MLflow run
    assert {r.data.tags["dagster_run_id"] for r in runs} == {result.run_id, second.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["gates"] == "passed" and r.data.tags["gate.roc_auc_gate"].startswith("passed") for r in runs)
    run = next(r for r in runs if r.info.run_id == materialization.metadata["mlflow_run_id"].value)
    assert {"roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "baseline_accuracy", "latency_p95_ms"} <= set(
        run.data.metrics
    )
    assert run.data.metrics["decision_threshold"] == materialization.metadata["decision_threshold"].value
    assert {"best.n_estimators", "space.max_depth", "n_iter", "search_rows"} <= set(run.data.params)
    for tag in ("data_version", "code_version", "git_commit", "version.python", "version.scikit-learn"):
        assert run.data.tags[tag]
    client = MlflowClient(tracking_uri=f"sqlite:///{var}/mlflow.db")
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {
        "roc_curve.png",
        "precision_recall_curve.png",
        "confusion_matrix.png",
        "calibration.png",
        "feature_importances.png",
        "fairness.png",
    }
    assert {"fairness.gender.selection_rate_ratio", "fairness.age.equalized_odds_difference"} <= set(run.data.metrics)
    mlflow.set_tracking_uri(f"sqlite:///{var}/mlflow.db")
    model = mlflow.pyfunc.load_model(materialization.metadata["mlflow_model_uri"].value)
    assert model.metadata.signature is not None
    example = pd.read_parquet(VersionStore(var / "artifacts" / "processed_dataset").current() / DATASET_FILE).head(3)
    assert len(model.predict(example.drop(columns=["transaction_id", "HighAmount"]))) == 3


def test_identical_retrain_is_not_repeated_and_keeps_the_model_version(first_run):
    var, _, first, _, third_event, third = first_run
    assert third.success
    assert first.tags["dagster/data_version"] == third_event.tags["dagster/data_version"]
    assert third_event.metadata["mlflow_run_id"].value == first.metadata["mlflow_run_id"].value
    assert not [r for r in _runs(var) if r.data.tags["dagster_run_id"] == third.run_id]  # no new MLflow run


def test_a_run_left_active_in_the_process_is_not_reused(instance, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("elsewhere", (tmp_path / "art").as_uri()))
    stale = mlflow.start_run()  # as dagster-mlflow's own resource leaves one behind
    result = _materialize(instance, tmp_path)
    assert result.success and mlflow.active_run() is None
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    ours = [r for r in _runs(tmp_path) if r.data.tags.get("dagster_run_id") == result.run_id]
    assert len(ours) == 1 and ours[0].info.run_id != stale.info.run_id and ours[0].info.status == "FINISHED"


def test_failure_during_training_marks_the_run_failed_and_keeps_the_old_model(first_run, trained, monkeypatch):
    instance, tmp_path = trained
    assert _materialize(instance, tmp_path).success  # the approved model of first_run, not trained again
    store = VersionStore(tmp_path / "artifacts" / "trained_model")
    before = store.current_version()

    def broken(*_args, **_kwargs):
        raise RuntimeError("evaluation blew up")

    monkeypatch.setattr(evaluate, "holdout_metrics", broken)
    result = _materialize(instance, tmp_path, n_iter=3)  # other settings -> would be a new version
    assert not result.success
    statuses = {r.data.tags["dagster_run_id"]: r.info.status for r in _runs(tmp_path)}
    assert statuses[result.run_id] == "FAILED"
    assert "RUNNING" not in statuses.values()
    assert store.current_version() == before


def test_each_gate_failing_blocks_downstream_and_says_why(first_run, trained):
    instance, tmp_path = trained
    assert _materialize(instance, tmp_path).success  # the approved model of first_run, not trained again
    store = VersionStore(tmp_path / "artifacts" / "trained_model")
    approved = store.current_version()
    result = _materialize(instance, tmp_path, min_roc_auc=0.99, min_accuracy=0.99, max_latency_ms=0.001)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "blocking asset checks failed" in failure.step_failure_data.error.message
    assert "roc_auc_gate" in failure.step_failure_data.error.message
    failed = _gates(result)
    assert not any(failed[g].passed for g in ("roc_auc_gate", "accuracy_gate", "latency_gate"))
    assert "below min_roc_auc 0.99" in failed["roc_auc_gate"].description
    assert "below min_accuracy 0.99" in failed["accuracy_gate"].description
    assert "over max_latency_ms 0.001" in failed["latency_gate"].description
    assert failed["roc_auc_gate"].metadata["threshold"].value == "0.99"
    consumed = instance.get_latest_materialization_event(dg.AssetKey("model_consumer"))
    assert consumed.run_id != result.run_id  # only the first, approved run fed the next stage

    # The failed attempt is kept and marked, but the approved version stays current for every later run.
    assert store.current_version() == approved and store.latest_version() != approved
    event = instance.get_latest_materialization_event(dg.AssetKey("trained_model")).asset_materialization
    assert event.metadata["approved"].value is False and event.tags["dagster/data_version"] == approved
    failed_run = next(r for r in _runs(tmp_path) if r.data.tags["dagster_run_id"] == result.run_id)
    assert failed_run.data.tags["gates"] == "failed"
    assert failed_run.data.tags["gate.roc_auc_gate"].startswith("FAILED: hold-out ROC-AUC")


def test_data_without_signal_fails_honestly(instance, tmp_path, banking_csv):
    frame = pd.read_csv(banking_csv, dtype=str)
    # Like the public export: the amount is independent of everything else.
    frame["Transaction Amount"] = frame["Transaction Amount"].sample(frac=1, random_state=0).to_numpy()
    frame.to_csv(tmp_path / "random.csv", index=False)
    result = _materialize(instance, tmp_path, raw=tmp_path / "random.csv")
    gate = _gates(result)["roc_auc_gate"]
    assert not gate.passed and gate.metadata["actual"].value < 0.65
    assert "guessing" in gate.description
    assert instance.get_latest_materialization_event(dg.AssetKey("model_consumer")) is None
