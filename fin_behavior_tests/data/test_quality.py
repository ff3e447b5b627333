from __future__ import annotations

import pytest

from fin_behavior.data import quality
from fin_behavior.data.columns import FEATURES, KEY, TARGET
from fin_behavior.data.processing import process_raw_file


@pytest.fixture(scope="module")
def dataset(banking_csv):
    return process_raw_file(banking_csv, 0.95).dataset


def test_generated_data_passes_every_check(dataset):
    assert quality.schema_conformance(dataset).passed
    assert quality.min_rows(dataset, 1_000).passed
    assert quality.positive_rate(dataset, 0.01, 0.25).passed
    assert quality.duplicate_ids(dataset).passed
    leakage = quality.target_leakage(dataset, 0.95)
    assert leakage.passed and 0.6 < leakage.actual < 0.95


def test_a_leaking_feature_fails_and_is_named(dataset):
    leaky = dataset.copy()
    leaky["amount_hint"] = leaky[TARGET] * 1_000 + leaky["age"]  # what `Transaction Amount` would give
    outcome = quality.target_leakage(leaky, 0.95, [*FEATURES, "amount_hint"])
    assert not outcome.passed
    assert "'amount_hint'" in outcome.message and outcome.actual >= 0.95


def test_many_valued_noise_does_not_look_like_a_leak(dataset):
    noisy = dataset.copy()
    noisy["row_noise"] = range(len(noisy))  # unique per row: in-sample encoding would score ~1.0
    assert quality.single_feature_aucs(noisy, ["row_noise"])["row_noise"] < 0.6


def test_schema_violation_is_reported(dataset):
    broken = dataset.copy()
    broken.loc[0, "gender"] = "Robot"
    outcome = quality.schema_conformance(broken)
    assert not outcome.passed and "gender" in outcome.message


def test_duplicates_and_bands_show_actual_vs_threshold(dataset):
    dupes = dataset.copy()
    dupes.loc[1, KEY] = dupes.loc[0, KEY]
    outcome = quality.duplicate_ids(dupes)
    assert not outcome.passed and outcome.actual == 1 and dupes.loc[0, KEY] in outcome.message
    assert not quality.min_rows(dataset, 10_000).passed
    rate = quality.positive_rate(dataset, 0.10, 0.20)
    assert not rate.passed and rate.actual == pytest.approx(0.05, abs=0.001)
