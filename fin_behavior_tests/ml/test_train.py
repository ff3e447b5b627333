from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fin_behavior.data.columns import FEATURES, TARGET
from fin_behavior.data.processing import process_raw_file
from fin_behavior.ml.evaluate import holdout_metrics, single_row_latency_ms
from fin_behavior.ml.plots import feature_importances
from fin_behavior.ml.train import build_pipeline, choose_threshold, search, split_dataset, train
from fin_behavior_tests.helpers import fast_options

FAST = fast_options(n_iter=3)


@pytest.fixture(scope="module")
def dataset(banking_csv):
    return process_raw_file(banking_csv, 0.95).dataset


@pytest.fixture(scope="module")
def trained(dataset):
    messages: list[str] = []
    return train(dataset, FAST, messages.append), messages


def test_search_reports_progress_and_stays_in_the_space(trained):
    model, messages = trained
    assert [m.split(":")[0] for m in messages[:3]] == [f"search candidate {i}/3" for i in (1, 2, 3)]
    assert "best so far" in messages[0] and messages[-1].startswith("fitting the final model on 4000 rows")
    assert messages[-2].startswith("decision threshold ")
    params = model.search.best_params
    assert 10 <= params["n_estimators"] <= 30 and 3 <= params["max_depth"] <= 20
    assert params["class_weight"] in ("balanced", "balanced_subsample", None)
    assert model.search.best_cv_roc_auc == max(c["cv_roc_auc"] for c in model.search.candidates)


def test_search_is_capped_but_final_fit_uses_all_training_rows(trained):
    model, _ = trained
    assert model.search.search_rows == 1_500
    assert model.pipeline.named_steps["clf"].n_features_in_ > len(FEATURES)  # one-hot widened the inputs
    assert len(model.split.x_train) == 4_000 and len(model.split.x_test) == 1_000
    assert model.split.y_test.mean() == pytest.approx(0.05)  # stratified


def test_same_seed_same_search(dataset, trained):
    split = split_dataset(dataset, 0.2, 42)
    again = search(split.x_train, split.y_train, FAST)
    assert again.best_params == trained[0].search.best_params
    assert [c["cv_roc_auc"] for c in again.candidates] == [c["cv_roc_auc"] for c in trained[0].search.candidates]
    assert 0.0 < again.decision_threshold < 1.0  # chosen out of fold, reproducibly
    assert again.decision_threshold == trained[0].search.decision_threshold


def test_the_pipeline_takes_business_form_rows_and_unknown_categories(trained, dataset):
    model, _ = trained
    row = dataset[list(FEATURES)].head(1).copy()
    row.loc[row.index[0], "city"] = "Atlantis"  # unseen at training: ignored by the one-hot encoder
    row.loc[row.index[0], "age"] = np.nan  # imputed
    proba = model.pipeline.predict_proba(row)
    assert proba.shape == (1, 2) and np.isclose(proba.sum(), 1.0)
    row.loc[row.index[0], "card_type"] = np.nan  # missing category: treated as unknown, like "Atlantis"
    assert model.pipeline.predict_proba(row).shape == (1, 2)
    assert model.pipeline.named_steps["clf"].n_jobs is None  # single-row scoring without thread dispatch


def test_single_class_data_is_refused_clearly(dataset):
    with pytest.raises(ValueError, match="single class"):
        split_dataset(dataset.assign(**{TARGET: 0}), 0.2, 42)


def test_metrics_come_with_the_majority_baseline():
    y = np.array([0] * 95 + [1] * 5)
    proba = np.r_[np.linspace(0, 0.4, 95), np.linspace(0.6, 1, 5)]
    metrics = holdout_metrics(y, proba, 0.5)
    assert metrics["roc_auc"] == 1.0 and metrics["accuracy"] == 1.0
    assert metrics["baseline_accuracy"] == 0.95  # always-0 already scores this
    assert metrics["baseline_roc_auc"] == 0.5 and metrics["baseline_balanced_accuracy"] == 0.5
    assert metrics["baseline_recall"] == 0.0


def test_the_decision_threshold_maximizes_f1_and_labels_follow_it():
    y = np.array([0] * 95 + [1] * 5)
    proba = np.r_[np.linspace(0.0, 0.2, 95), [0.25, 0.3, 0.35, 0.4, 0.45]]  # all positives below 0.5
    threshold = choose_threshold(y, proba)
    assert threshold == pytest.approx(0.25)  # the lowest positive: every positive caught, no negative flagged
    at_half, chosen = holdout_metrics(y, proba, 0.5), holdout_metrics(y, proba, threshold)
    assert at_half["balanced_accuracy"] == 0.5 and at_half["recall"] == 0.0  # "always 0" at the fixed cut-off
    assert chosen["balanced_accuracy"] == 1.0 and chosen["f1"] == 1.0
    assert chosen["roc_auc"] == at_half["roc_auc"]  # the ranking is the same; only the labels change


def test_latency_is_measured_per_row(trained):
    model, _ = trained
    calls = []
    latency = single_row_latency_ms(lambda row: calls.append(len(row)), model.split.x_test, repeats=20, warmup=2)
    assert calls == [1] * 22
    assert 0 <= latency["latency_p50_ms"] <= latency["latency_p95_ms"]


def test_feature_importances_fold_one_hot_columns_back(trained):
    importances = feature_importances(trained[0].pipeline)
    assert set(importances.index) == set(FAST.features) == set(FEATURES) - {"gender"}
    assert importances.sum() == pytest.approx(1.0)


def test_gender_is_accepted_but_not_read_by_default(trained):
    """protected_attributes minus protected_features are not model inputs: a selection of columns, so rows still
    carry gender (the dataset keeps it for fairness, the service accepts it) and changing it changes nothing."""
    model = trained[0]
    rows = model.split.x_test.head(200)
    assert "gender" in rows.columns
    swapped = rows.assign(gender=rows["gender"].map({"Male": "Female", "Female": "Male", "Other": "Male"}))
    assert (swapped["gender"] != rows["gender"]).all()
    assert np.array_equal(model.pipeline.predict_proba(rows), model.pipeline.predict_proba(swapped))
    allowed = fast_options(protected_features=["age", "gender"])
    assert "gender" in allowed.features and allowed.describe()["features"] != FAST.describe()["features"]


def test_build_pipeline_is_a_fresh_unfitted_estimator():
    pipeline = build_pipeline(n_estimators=5)
    assert pipeline.named_steps["clf"].n_estimators == 5
    with pytest.raises(Exception, match="not fitted"):
        pipeline.predict(pd.DataFrame(columns=list(FEATURES)))


def test_folding_the_scaler_keeps_the_model(trained):
    from fin_behavior.ml.export import fold_scaler_into_forest

    model, _ = trained
    folded = fold_scaler_into_forest(model.pipeline)
    scaler = folded.named_steps["features"].named_transformers_["numeric"].named_steps["scale"]
    assert (scaler.mean_ == 0).all() and (scaler.scale_ == 1).all()
    before = model.pipeline.predict_proba(model.split.x_test)[:, 1]
    after = folded.predict_proba(model.split.x_test)[:, 1]
    # only float32 rounding near a threshold can differ: rare, and at most one tree's vote
    one_tree = 1 / model.pipeline.named_steps["clf"].n_estimators
    assert np.mean(np.abs(before - after) < 1e-9) > 0.97 and np.abs(before - after).max() <= one_tree + 1e-9
    original = model.pipeline.named_steps["features"].named_transformers_["numeric"].named_steps["scale"]
    assert (original.scale_ != 1).any()  # the trained pipeline itself is untouched
