"""Training: one scikit-learn Pipeline (impute, scale, one-hot, random forest) and a randomized search.

The search samples candidates exactly as `RandomizedSearchCV` does (`ParameterSampler` with the same seed)
but scores them one at a time so progress can be reported; it runs on a stratified sample capped at
`search_max_rows`, so its cost does not grow with the data. The final model is fit on all training rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import randint
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.model_selection import ParameterSampler, StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fin_behavior.data.columns import CATEGORICAL_FEATURES, FEATURES, KEY, NUMERIC_FEATURES, TARGET


@dataclass(frozen=True)
class SearchSpace:
    """Inclusive ranges, as in the seeds."""

    n_estimators: tuple[int, int] = (50, 200)
    max_depth: tuple[int, int] = (3, 20)
    min_samples_split: tuple[int, int] = (2, 20)
    min_samples_leaf: tuple[int, int] = (1, 20)
    bootstrap: tuple[bool, ...] = (True, False)
    class_weight: tuple[str | None, ...] = ("balanced", "balanced_subsample", None)

    def distributions(self) -> dict[str, Any]:
        ints = ("n_estimators", "max_depth", "min_samples_split", "min_samples_leaf")
        dists: dict[str, Any] = {f"clf__{n}": randint(getattr(self, n)[0], getattr(self, n)[1] + 1) for n in ints}
        dists["clf__bootstrap"] = list(self.bootstrap)
        dists["clf__class_weight"] = list(self.class_weight)
        return dists

    def describe(self) -> dict[str, str]:
        return {name: str(value) for name, value in self.__dict__.items()}


@dataclass(frozen=True)
class TrainingOptions:
    n_iter: int = 20
    cv: int = 3
    test_size: float = 0.2
    random_state: int = 42
    search_max_rows: int = 20_000
    n_jobs: int = -1
    space: SearchSpace = field(default_factory=SearchSpace)


@dataclass(frozen=True)
class Split:
    x_train: pd.DataFrame
    x_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    test_ids: pd.Series


@dataclass(frozen=True)
class SearchResult:
    best_params: dict[str, Any]
    best_cv_roc_auc: float
    candidates: list[dict[str, Any]]  # params and mean CV ROC-AUC of every candidate, in search order
    search_rows: int
    seconds: float


@dataclass(frozen=True)
class TrainedModel:
    pipeline: Pipeline
    split: Split
    search: SearchResult
    fit_seconds: float


def build_pipeline(**classifier_params: Any) -> Pipeline:
    """The whole model, from business-form features to probabilities; this is what gets shipped."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    # A missing or unseen category is "unknown": an all-zero one-hot row, identical in scikit-learn and ONNX.
    categorical = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    features = ColumnTransformer(
        [("numeric", numeric, list(NUMERIC_FEATURES)), ("categorical", categorical, list(CATEGORICAL_FEATURES))]
    )
    return Pipeline([("features", features), ("clf", RandomForestClassifier(**classifier_params))])


def split_dataset(dataset: pd.DataFrame, test_size: float, random_state: int) -> Split:
    """Stratified hold-out; the test IDs are kept so a rebuild elsewhere can use the very same split."""
    if dataset[TARGET].nunique() < 2:
        raise ValueError(f"{TARGET} has a single class in the processed data; there is nothing to learn")
    train, test = train_test_split(dataset, test_size=test_size, stratify=dataset[TARGET], random_state=random_state)
    cols = list(FEATURES)
    return Split(train[cols], test[cols], train[TARGET], test[TARGET], test[KEY].reset_index(drop=True))


def _search_sample(x: pd.DataFrame, y: pd.Series, max_rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    if len(x) <= max_rows:
        return x, y
    sample_x, _, sample_y, _ = train_test_split(x, y, train_size=max_rows, stratify=y, random_state=seed)
    return sample_x, sample_y


def search(
    x: pd.DataFrame, y: pd.Series, options: TrainingOptions, progress: Callable[[str], None] = lambda _: None
) -> SearchResult:
    started = time.perf_counter()
    x, y = _search_sample(x, y, options.search_max_rows, options.random_state)
    folds = StratifiedKFold(n_splits=options.cv, shuffle=True, random_state=options.random_state)
    sampler = ParameterSampler(options.space.distributions(), options.n_iter, random_state=options.random_state)
    candidates: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for i, params in enumerate(sampler, start=1):
        model = build_pipeline(random_state=options.random_state, n_jobs=options.n_jobs).set_params(**params)
        score = float(np.mean(cross_val_score(model, x, y, scoring="roc_auc", cv=folds)))
        candidates.append({"params": params, "cv_roc_auc": score})
        if best is None or score > best["cv_roc_auc"]:
            best = candidates[-1]
        progress(
            f"search candidate {i}/{options.n_iter}: CV ROC-AUC {score:.4f} (best so far {best['cv_roc_auc']:.4f})"
        )
    assert best is not None, "n_iter must be at least 1"
    best_params = {k.removeprefix("clf__"): _plain(v) for k, v in best["params"].items()}
    return SearchResult(best_params, best["cv_roc_auc"], candidates, len(x), time.perf_counter() - started)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def fit_final(split: Split, best_params: dict[str, Any], options: TrainingOptions) -> Pipeline:
    pipeline = build_pipeline(random_state=options.random_state, n_jobs=options.n_jobs, **best_params)
    pipeline.fit(split.x_train, split.y_train)
    # Single-row scoring is dominated by per-tree thread dispatch when n_jobs > 1 (scikit-learn#16143).
    pipeline.set_params(clf__n_jobs=None)
    return pipeline


def train(
    dataset: pd.DataFrame, options: TrainingOptions, progress: Callable[[str], None] = lambda _: None
) -> TrainedModel:
    split = split_dataset(dataset, options.test_size, options.random_state)
    result = search(split.x_train, split.y_train, options, progress)
    progress(f"fitting the final model on {len(split.x_train)} rows with {result.best_params}")
    started = time.perf_counter()
    pipeline = fit_final(split, result.best_params, options)
    return TrainedModel(pipeline, split, result, time.perf_counter() - started)
