"""Quality checks on the processed table. Each returns an `Outcome` with the number next to its bar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.errors

from fin_behavior.data.columns import CATEGORICAL_FEATURES, FEATURES, KEY, TARGET
from fin_behavior.data.schemas import ProcessedDataset
from fin_behavior.outcome import Outcome
from fin_behavior.records import Evidence
from fin_behavior.settings import Settings

STAGE = "processed_dataset"
CHECKS = {  # name -> (blocking, what it asks); a blocking failure keeps the version from ever being used
    "schema_conformance": (True, "Processed rows match the ProcessedDataset pandera schema."),
    "min_row_count": (False, "Enough rows to train on (setting min_rows)."),
    "positive_rate_in_band": (False, f"{TARGET} rate within [min_positive_rate, max_positive_rate]."),
    "unique_transaction_ids": (False, "No duplicate transaction IDs."),
    "no_target_leakage": (True, f"No single feature predicts {TARGET} with ROC-AUC >= max_single_feature_auc."),
}
THRESHOLDS = ("min_rows", "min_positive_rate", "max_positive_rate", "max_single_feature_auc")  # the settings used
_LEAKAGE_SAMPLE_ROWS = 200_000
_NUMERIC_BINS = 50
_FOLDS = 5


def schema_conformance(dataset: pd.DataFrame) -> Outcome:
    try:
        ProcessedDataset.validate(dataset, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        summary = "; ".join(
            f"{col}: {check}" for col, check in cases[["column", "check"]].drop_duplicates().head(8).to_numpy()
        )
        return Outcome(False, len(cases), 0, f"{len(cases)} schema violations: {summary}")
    return Outcome(True, 0, 0, "processed table matches the ProcessedDataset schema")


def min_rows(dataset: pd.DataFrame, minimum: int) -> Outcome:
    n = len(dataset)
    return Outcome(n >= minimum, n, minimum, f"{n} rows (minimum {minimum}, setting min_rows)")


def positive_rate(dataset: pd.DataFrame, low: float, high: float) -> Outcome:
    rate = float(dataset[TARGET].mean()) if len(dataset) else 0.0
    band = f"[{low:.3f}, {high:.3f}]"
    return Outcome(
        low <= rate <= high,
        round(rate, 5),
        band,
        f"{TARGET} rate {rate:.3%}, expected within {band} (settings min_positive_rate / max_positive_rate)",
    )


def duplicate_ids(dataset: pd.DataFrame) -> Outcome:
    dupes = dataset[KEY][dataset[KEY].duplicated()]
    sample = ", ".join(dupes.head(5))
    message = f"{len(dupes)} duplicate {KEY} values" + (f", e.g. {sample}" if len(dupes) else "")
    return Outcome(dupes.empty, len(dupes), 0, message)


def _out_of_fold_scores(column: pd.Series, target: pd.Series, folds: np.ndarray) -> np.ndarray:
    """How well one column alone separates the classes: the target rate of the row's category (or quantile
    bin) learnt on the other folds, so a mere many-valued column does not look predictive."""
    if column.name in CATEGORICAL_FEATURES:
        groups = column.astype(str).to_numpy()
    else:
        ranks = column.rank(method="first").fillna(0)
        groups = pd.qcut(ranks, q=max(1, min(_NUMERIC_BINS, column.nunique())), labels=False).to_numpy()
    scores = np.empty(len(column))
    y = target.to_numpy()
    for fold in np.unique(folds):
        held = folds == fold
        rates = pd.Series(y[~held]).groupby(groups[~held]).mean()
        scores[held] = pd.Series(groups[held]).map(rates).fillna(y[~held].mean()).to_numpy()
    return scores


def single_feature_aucs(dataset: pd.DataFrame, features: tuple[str, ...] | list[str] = FEATURES) -> dict[str, float]:
    """ROC-AUC of each feature alone against the target, highest first (a leak scores near 1.0)."""
    sample = dataset if len(dataset) <= _LEAKAGE_SAMPLE_ROWS else dataset.sample(_LEAKAGE_SAMPLE_ROWS, random_state=0)
    target = sample[TARGET]
    if target.nunique() < 2:
        return {}
    from sklearn.metrics import roc_auc_score  # lazy: scikit-learn costs seconds at code-location load

    folds = np.random.default_rng(0).permutation(len(sample)) % _FOLDS
    aucs = {name: float(roc_auc_score(target, _out_of_fold_scores(sample[name], target, folds))) for name in features}
    return dict(sorted(aucs.items(), key=lambda kv: -kv[1]))


def target_leakage(dataset: pd.DataFrame, max_auc: float, features: tuple[str, ...] | list[str] = FEATURES) -> Outcome:
    aucs = single_feature_aucs(dataset, features)
    if not aucs:
        return Outcome(False, float("nan"), max_auc, f"{TARGET} has a single class; leakage cannot be measured")
    name, auc = next(iter(aucs.items()))
    if auc >= max_auc:
        return Outcome(
            False,
            round(auc, 4),
            max_auc,
            f"feature '{name}' alone predicts {TARGET} with ROC-AUC {auc:.3f} >= {max_auc}: it leaks the target. "
            "Remove it from the features (or raise max_single_feature_auc if that is truly intended).",
        )
    return Outcome(True, round(auc, 4), max_auc, f"strongest single feature: '{name}' with ROC-AUC {auc:.3f}")


def judge(dataset: pd.DataFrame, version: str, settings: Settings) -> Evidence:
    """Every check of the processed table, as the evidence published with it."""
    outcomes = {
        "schema_conformance": schema_conformance(dataset),
        "min_row_count": min_rows(dataset, settings.min_rows),
        "positive_rate_in_band": positive_rate(dataset, settings.min_positive_rate, settings.max_positive_rate),
        "unique_transaction_ids": duplicate_ids(dataset),
        "no_target_leakage": target_leakage(dataset, settings.max_single_feature_auc),
    }
    return Evidence.judge(STAGE, version, CHECKS, outcomes)
