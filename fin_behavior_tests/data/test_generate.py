from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from fin_behavior.data import generate
from fin_behavior.data.columns import CATEGORICAL_FEATURES, CATEGORIES, DATE_COLUMNS, FEATURES, RAW_COLUMNS, TARGET
from fin_behavior.data.features import build_features
from fin_behavior.data.ingest import parse_raw, read_raw_csv


def test_layout_matches_the_kaggle_export(banking_csv):
    raw = pd.read_csv(banking_csv, dtype=str)
    assert tuple(raw.columns) == RAW_COLUMNS
    assert len(raw) == 5_000 and len(RAW_COLUMNS) == 40
    assert not raw.isna().any().any()
    no_leading_zero = re.compile(r"^[1-9]\d?/[1-9]\d?/\d{4}$")
    for column in DATE_COLUMNS:
        assert raw[column].str.match(no_leading_zero).all(), column


def test_values_stay_in_the_documented_ranges(banking_csv):
    raw = pd.read_csv(banking_csv)
    for column, allowed in CATEGORIES.items():
        assert set(raw[column]) <= set(allowed), column
    assert raw["Age"].between(18, 69).all()
    assert raw["Transaction Amount"].between(10, 5_000).all()
    assert raw["Account Balance"].between(100, 10_000).all()
    assert raw["Credit Limit"].between(1_000, 10_000).all()
    assert raw["Interest Rate"].between(1, 10).all()
    assert set(raw["Anomaly"]) <= {1, -1}
    txn = pd.to_datetime(raw["Transaction Date"], format="%m/%d/%Y")
    opened = pd.to_datetime(raw["Date Of Account Opening"], format="%m/%d/%Y")
    assert (txn.dt.year == 2023).all() and opened.dt.year.between(2000, 2022).all()
    assert raw["TransactionID"].is_unique


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "CHUNK_ROWS", 700)  # several chunks, to cover chunk seeding
    a = generate.generate_csv(tmp_path / "a.csv", rows=2_000, seed=3).read_bytes()
    b = generate.generate_csv(tmp_path / "b.csv", rows=2_000, seed=3).read_bytes()
    c = generate.generate_csv(tmp_path / "c.csv", rows=2_000, seed=4).read_bytes()
    assert a == b
    assert a != c
    frame = pd.read_csv(tmp_path / "a.csv")
    assert len(frame) == 2_000 and frame["TransactionID"].is_unique


def test_rejects_non_positive_row_counts(tmp_path):
    with pytest.raises(ValueError, match="rows must be at least 1"):
        generate.generate_csv(tmp_path / "x.csv", rows=0)
    assert not (tmp_path / "x.csv").exists()


def test_high_amount_is_learnable_but_not_trivially(banking_csv):
    """The point of the generator: a forest without the amount reaches ROC-AUC in 0.80-0.92."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    data = build_features(parse_raw(read_raw_csv(banking_csv)).valid)
    x = pd.get_dummies(data[list(FEATURES)], columns=list(CATEGORICAL_FEATURES))
    y = data[TARGET]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=42)
    forest = RandomForestClassifier(200, min_samples_leaf=3, class_weight="balanced_subsample", random_state=0)
    auc = roc_auc_score(y_test, forest.fit(x_train, y_train).predict_proba(x_test)[:, 1])
    assert 0.80 <= auc <= 0.92
    assert np.isclose(y.mean(), 0.05, atol=0.005)
