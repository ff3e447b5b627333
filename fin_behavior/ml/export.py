"""Preparing a fitted pipeline for shipping."""

from __future__ import annotations

import copy

import numpy as np
from sklearn.pipeline import Pipeline


def fold_scaler_into_forest(pipeline: Pipeline) -> Pipeline:
    """A copy whose StandardScaler is the identity and whose trees compare raw numbers instead.

    Trees test `(x - mean) / scale <= t`, i.e. `x <= t * scale + mean`: the same model in exact arithmetic.
    In practice the scaled value is rounded to float32 before the comparison, and scikit-learn (float64
    then float32) and ONNX (float32 throughout) round differently; with ~1,000 comparisons per prediction
    that flips a split now and then and moves a probability by up to ~0.01. Comparing raw values removes
    that rounding, so every runtime gives the same answer.
    """
    folded = copy.deepcopy(pipeline)
    scaler = folded.named_steps["features"].named_transformers_["numeric"].named_steps["scale"]
    n_numeric = len(scaler.scale_)
    for tree in (estimator.tree_ for estimator in folded.named_steps["clf"].estimators_):
        numeric_split = (tree.feature >= 0) & (tree.feature < n_numeric)  # numeric columns come first
        feature = tree.feature[numeric_split]
        tree.threshold[numeric_split] = tree.threshold[numeric_split] * scaler.scale_[feature] + scaler.mean_[feature]
    scaler.mean_ = np.zeros_like(scaler.mean_)
    scaler.scale_ = np.ones_like(scaler.scale_)
    scaler.var_ = np.ones_like(scaler.var_)
    return folded
