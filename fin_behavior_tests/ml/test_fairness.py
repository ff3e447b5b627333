"""Fairness evidence: a model that favours one gender through a proxy is stopped at trained_model and never
registered; the default data passes; small groups are reported and not judged; the record round-trips."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from fin_behavior.defs.dataset import ground_truth, processed_dataset, raw_transactions
from fin_behavior.defs.model import trained_model
from fin_behavior.defs.registry import registered_model_version
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.ml import fairness
from fin_behavior.ml.fairness_record import FairnessRecord, fairness_table
from fin_behavior.records import NotApprovedError
from fin_behavior.storage.store import VersionStore
from fin_behavior_tests.helpers import FAST_TRAINING, dagster_instance

EXPERIMENT = "fairness"


@dg.asset(deps=[trained_model])
def next_stage() -> None:
    """Stands in for compatible_model (whose serving environment takes minutes to build): never runs behind a
    failed blocking check."""


def _materialize(instance, var: Path, raw: Path, assets: list, **training):
    return dg.materialize(
        [raw_transactions, ground_truth, *assets],
        instance=instance,
        resources={
            "storage": StorageResource(var_dir=str(var), raw_data_path=str(raw)),
            "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{var}/mlflow.db", experiment_name=EXPERIMENT),
        },
        run_config={"ops": {"trained_model": {"config": FAST_TRAINING | training}}},
        selection=dg.AssetSelection.all(include_sources=True),
        raise_on_error=False,
    )


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["trained_model"]}


def proxy_file(banking_csv: Path, out: Path) -> Path:
    """The generated file, with gender tied to large transactions and `Feedback Type` standing in for gender:
    the model never reads gender, but it reads the proxy, and so selects men far more often."""
    frame = pd.read_csv(banking_csv, dtype=str)
    amount = frame["Transaction Amount"].astype(float)
    rng = np.random.default_rng(0)
    large = amount >= amount.quantile(0.9)
    male = rng.random(len(frame)) < np.where(large, 0.9, 0.4)
    frame["Gender"] = np.where(male, "Male", "Female")
    frame["Feedback Type"] = np.where(male, "Praise", "Complaint")
    frame.to_csv(out, index=False)
    return out


def test_a_proxy_for_gender_fails_selection_rate_ratio_and_nothing_registers(tmp_path, banking_csv):
    raw = proxy_file(banking_csv, tmp_path / "proxy.csv")
    with dagster_instance() as instance:
        chain = [processed_dataset, trained_model, next_stage]
        result = _materialize(instance, tmp_path, raw, chain)
        assert not result.success
        checks = _checks(result)
        ratio = checks["selection_rate_ratio"]
        assert not ratio.passed and ratio.severity == dg.AssetCheckSeverity.ERROR
        assert ratio.metadata["actual"].value < 0.5 and ratio.metadata["threshold"].value == ">= 0.8"
        # names the groups, their numbers and what to change
        assert "gender: ratio" in ratio.description and "between Female (selection rate" in ratio.description
        assert "and Male (" in ratio.description and "rows)" in ratio.description
        assert "proxy" in ratio.description and "FIN_BEHAVIOR_MIN_SELECTION_RATE_RATIO" in ratio.description
        assert checks["roc_auc_gate"].passed  # the model is good at its task: fairness alone stops it
        ran = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
        assert "next_stage" not in ran

        # the verdict travels with the version: no later run, of any stage, takes it
        store = VersionStore(tmp_path / "artifacts" / "trained_model")
        assert store.approved_version() is None and store.latest_version() is not None
        with pytest.raises(NotApprovedError, match="selection_rate_ratio"):
            store.current()
        later = dg.materialize(
            [registered_model_version],
            instance=instance,
            resources={
                "storage": StorageResource(var_dir=str(tmp_path), raw_data_path=str(raw)),
                "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment_name=EXPERIMENT),
            },
            raise_on_error=False,
        )
        assert not later.success  # no bundle was ever approved: there is nothing it could register
        record = FairnessRecord.read(store.path(store.latest_version()))
        gender = next(a for a in record.attributes if a.attribute == "gender")
        assert gender.selection_rate_ratio.established
        assert (gender.selection_rate_ratio.low_group, gender.selection_rate_ratio.high_group) == ("Female", "Male")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert client.search_registered_models() == []  # nothing registered, by any run


def test_the_default_data_passes_with_every_figure_recorded(tmp_path, banking_csv):
    with dagster_instance() as instance:
        result = _materialize(instance, tmp_path, banking_csv, [processed_dataset, trained_model])
    assert result.success
    checks = _checks(result)
    for name in ("selection_rate_ratio", "equalized_odds_difference"):
        assert checks[name].passed, checks[name].description
        assert "gender:" in checks[name].description and "age:" in checks[name].description  # age reported too
    store = VersionStore(tmp_path / "artifacts" / "trained_model")
    record = FairnessRecord.read(store.current())
    assert [a.attribute for a in record.attributes] == ["gender", "age"]
    age = next(a for a in record.attributes if a.attribute == "age")
    assert [g.name for g in age.groups] == ["<25", "25-44", "45-64", "65+"] and not age.judged
    assert sum(g.rows for g in age.groups) == record.rows == 1_000
    for group in age.groups:
        for figure in group.metrics.values():
            if figure.low is not None:
                assert figure.low <= figure.value <= figure.high
    table = fairness_table(store.current())
    assert "| gender | Other |" in table and "too small" in table  # 4% of customers: under the minimum size


def _scores(groups: dict[str, tuple[int, float]], seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """(labels, probabilities, groups): `rows` per group selected at its given rate (threshold 0.5)."""
    rng = np.random.default_rng(seed)
    y, proba, names = [], [], []
    for name, (rows, rate) in groups.items():
        selected = rng.permutation(rows) < round(rate * rows)  # exactly this share, in random rows
        labels = rng.random(rows) < 0.3
        y.append(labels)
        proba.append(np.where(selected, 0.6 + 0.3 * labels, 0.1 + 0.3 * labels))
        names += [name] * rows
    return np.concatenate(y), np.concatenate(proba), pd.DataFrame({"gender": names})


def _assess(y, proba, groups, min_group_size=100, **kwargs):
    return fairness.assess(
        y,
        proba,
        0.5,
        groups,
        judged_attributes=("gender",),
        min_group_size=min_group_size,
        bootstrap_samples=400,
        min_selection_rate_ratio=0.8,
        max_equalized_odds_difference=0.1,
        **kwargs,
    )


def test_small_groups_are_reported_and_not_judged():
    # "Tiny" is selected far less often, but has 30 rows: reported with its figures, not judged.
    y, proba, groups = _scores({"A": (600, 0.3), "B": (600, 0.28), "Tiny": (30, 0.02)})
    record = _assess(y, proba, groups)
    gender = record.attributes[0]
    tiny = next(g for g in gender.groups if g.name == "Tiny")
    assert tiny.rows == 30 and not tiny.judged and tiny.metrics["selection_rate"].value < 0.1
    assert {gender.selection_rate_ratio.low_group, gender.selection_rate_ratio.high_group} == {"A", "B"}
    outcome = fairness.gate(record, "selection_rate_ratio")
    assert outcome.passed and "not judged, under fairness_min_group_size 100: gender Tiny (30 rows)" in outcome.message
    # the same group at the minimum size is judged, and fails
    judged = _assess(y, proba, groups, min_group_size=30)
    failed = fairness.gate(judged, "selection_rate_ratio")
    assert not failed.passed and "between Tiny (selection rate" in failed.message


def test_a_gap_within_sampling_noise_is_not_established_but_a_clear_one_is():
    y, proba, groups = _scores({"A": (400, 0.10), "B": (400, 0.07)}, seed=3)  # ratio 0.7 on 400 rows each
    record = _assess(y, proba, groups)
    ratio = record.attributes[0].selection_rate_ratio
    assert ratio.value < 0.8 and ratio.interval.high >= 0.8 and not ratio.established
    outcome = fairness.gate(record, "selection_rate_ratio")
    assert outcome.passed and "its 95% interval reaches it (not established)" in outcome.message
    y, proba, groups = _scores({"A": (400, 0.30), "B": (400, 0.10)}, seed=3)
    assert not fairness.gate(_assess(y, proba, groups), "selection_rate_ratio").passed


def test_equalized_odds_difference_is_fairlearns_and_fails_on_a_clear_gap():
    from fairlearn.metrics import equalized_odds_difference

    rng = np.random.default_rng(1)
    n = 2_000
    groups = pd.DataFrame({"gender": rng.choice(["A", "B"], n)})
    y = rng.random(n) < 0.3
    # group B's positives are found far less often: a true-positive-rate gap of ~0.5
    found = rng.random(n) < np.where(groups["gender"] == "A", 0.9, 0.4)
    proba = np.where(y & found, 0.8, np.where(~y & (rng.random(n) < 0.1), 0.7, 0.2))
    record = _assess(y, proba, groups)
    comparison = record.attributes[0].equalized_odds_difference
    expected = equalized_odds_difference(y, proba >= 0.5, sensitive_features=groups["gender"])
    assert comparison.value == pytest.approx(expected, abs=1e-6)
    assert comparison.rate == "true_positive_rate" and comparison.established
    outcome = fairness.gate(record, "equalized_odds_difference")
    assert not outcome.passed and outcome.actual == pytest.approx(expected, abs=1e-6)
    assert "true positive rate gap" in outcome.message and "MAX_EQUALIZED_ODDS_DIFFERENCE" in outcome.message


def test_age_bands_and_a_missing_protected_column():
    rows = pd.DataFrame({"age": [18, 24, 25, 44, 45, 64, 65, 69], "gender": ["Male", None, *["Female"] * 6]})
    groups = fairness.protected_groups(rows, ("gender", "age"), (25, 45, 65))
    assert groups["age"].tolist() == ["<25", "<25", "25-44", "25-44", "45-64", "45-64", "65+", "65+"]
    assert groups["gender"].tolist()[:2] == ["Male", "(missing)"]
    with pytest.raises(ValueError, match=r"protected attributes \['religion'\] are not columns"):
        fairness.protected_groups(rows, ("religion",), (25,))


def test_the_record_round_trips(tmp_path):
    y, proba, groups = _scores({"A": (200, 0.3), "B": (200, 0.2)})
    record = _assess(y, proba, groups)
    record.write(tmp_path)
    assert FairnessRecord.read(tmp_path) == record


def test_settings_name_only_protected_attributes():
    from fin_behavior.settings import get_settings

    with pytest.raises(ValueError, match=r"fairness_judged_attributes \['religion'\] are not in protected_attributes"):
        get_settings().with_overrides(fairness_judged_attributes=["religion"])
    with pytest.raises(ValueError, match=r"protected_features \['gender'\] are not in protected_attributes"):
        get_settings().with_overrides(protected_attributes=["age"], protected_features=["gender"])
