"""Hold-out metrics next to the majority-class baseline, and in-process single-row latency."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "balanced_accuracy")


def _scores(y_true: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": accuracy_score(y_true, labels),
        "precision": precision_score(y_true, labels, zero_division=0),
        "recall": recall_score(y_true, labels, zero_division=0),
        "f1": f1_score(y_true, labels, zero_division=0),
        "roc_auc": roc_auc_score(y_true, proba),
        "pr_auc": average_precision_score(y_true, proba),
        "balanced_accuracy": balanced_accuracy_score(y_true, labels),
    }


def holdout_metrics(y_true: pd.Series | np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Every metric (labels = probability >= the decision threshold), and `baseline_<metric>` for a model that
    always predicts the majority class."""
    y = np.asarray(y_true)
    model = _scores(y, (proba >= threshold).astype(int), proba)
    majority = int(np.mean(y) >= 0.5)
    constant = np.full(len(y), majority)
    baseline = _scores(y, constant, constant.astype(float))
    return {k: round(float(v), 6) for k, v in (model | {f"baseline_{k}": v for k, v in baseline.items()}).items()}


def single_row_latency_ms(predict_proba, rows: pd.DataFrame, repeats: int = 60, warmup: int = 5) -> dict[str, float]:
    """p50/p95 milliseconds of one-row `predict_proba` calls, cycling over `rows`."""
    timings = []
    for i in range(warmup + repeats):
        row = rows.iloc[[i % len(rows)]]
        started = time.perf_counter()
        predict_proba(row)
        if i >= warmup:
            timings.append((time.perf_counter() - started) * 1000)
    return {
        "latency_p50_ms": round(float(np.percentile(timings, 50)), 3),
        "latency_p95_ms": round(float(np.percentile(timings, 95)), 3),
    }
