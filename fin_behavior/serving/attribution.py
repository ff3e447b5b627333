"""Exact contributions of each business column to the model's probability, for the explanation worker (explain.py).

The model is a scikit-learn Pipeline: an encoding part (a ColumnTransformer: impute and scale the numbers, one-hot
the categories) and a tree ensemble. shap's TreeExplainer computes tree SHAP values (path-dependent, the exact
algorithm of Lundberg et al. 2020) of the ensemble's probability over the encoded features, so that
`base_value + sum(contributions) == probability` exactly (to float rounding, ~1e-15). The parts one column was
encoded into are summed back to that column: a contribution per field the client sent.

Runs only in the explanation worker's process: shap, and the numba it imports, never load into the scoring process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fin_behavior.records import BundleFiles
from fin_behavior.serving.bundle import BundleError, verify_bundle

T = TypeVar("T")


class Unexplainable(RuntimeError):
    """This model cannot be explained exactly here; the message says why (answered as a 501)."""


# What a row's base_value + sum(contributions) adds up to: the platform's forest's probability; for a submitted model
# (submitted_attribution.py) also a classifier's log-odds or a regressor's prediction.
PROBABILITY, LOG_ODDS, PREDICTION = "probability", "log_odds", "prediction"


@dataclass(frozen=True)
class Attribution:
    base_value: float  # the model's mean output over its training data (the trees' own weights) or its reference
    contributions: dict[str, float]  # business column -> its signed share of output - base_value
    # what a submitted model answered for the row, computed beside its contributions (prediction, probability,
    # log_odds); empty for the platform's model, whose probability /score answered
    answer: dict[str, Any] = field(default_factory=dict)


class Attributor:
    """One model with its explainer, built once per worker process (or once for the bundle's global view)."""

    scale = PROBABILITY

    def __init__(self, pipeline: Any, features: list[str], environment: str):
        steps = getattr(pipeline, "steps", None)
        if not steps or len(steps) < 2:
            raise Unexplainable("the model is not a scikit-learn Pipeline of an encoding and an estimator")
        self.features = features
        self.encode = pipeline[:-1]
        estimator = pipeline[-1]
        shap = import_shap(
            f"the serving environment {environment!r} has no shap: add it to its packages "
            "(fin_behavior/environments/serving_environments.toml) to explain this model"
        )
        try:
            self.explainer = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent")
        except Exception as exc:  # shap names what it does not support
            raise Unexplainable(f"{type(estimator).__name__} cannot be explained exactly by tree SHAP: {exc}") from None
        self.groups = encoded_groups(self.encode, self.features)
        self.base_value = base_value(self.explainer)

    @classmethod
    def load(cls, bundle_dir: Path) -> Attributor:
        """The bundle's model (model.joblib), the bundle verified again by the process that loads it."""
        info = verified(verify_bundle, bundle_dir)
        if BundleFiles.MODEL not in info.sha256:
            raise Unexplainable(f"the bundle holds no {BundleFiles.MODEL} (runtime {info.runtime}): nothing to explain")
        import joblib

        return cls(joblib.load(bundle_dir / BundleFiles.MODEL), info.feature_names(), info.serving_environment)

    def global_importance(self, columns: dict[str, list]) -> dict[str, float]:
        """Mean absolute contribution per column over the rows of `columns` (the hold-out), largest first."""
        rows = self.explain(columns)
        means = {name: float(np.mean([abs(row.contributions[name]) for row in rows])) for name in self.features}
        return dict(sorted(means.items(), key=lambda item: item[1], reverse=True))

    def explain(self, columns: dict[str, list]) -> list[Attribution]:
        """One Attribution per row of `columns` (every feature -> its values, as validated for scoring)."""
        import pandas as pd

        encoded = np.asarray(self.encode.transform(pd.DataFrame(columns)), dtype=float)
        if encoded.shape[1] != len(self.groups):
            raise Unexplainable(f"the encoding gave {encoded.shape[1]} features, expected {len(self.groups)}")
        values = self.explainer.shap_values(encoded, check_additivity=False)
        per_column = summed_per_column(positive_class(values), self.groups, len(self.features))
        return [
            Attribution(self.base_value, {name: float(v) for name, v in zip(self.features, row, strict=True)})
            for row in per_column
        ]


def verified(load: Callable[[Path], T], bundle_dir: Path) -> T:
    """`load(bundle_dir)`, which verifies the bundle first (again, in the process that explains it); a bundle it
    refuses cannot be explained: Unexplainable, saying why."""
    try:
        return load(bundle_dir)
    except BundleError as exc:
        raise Unexplainable(str(exc)) from None


def import_shap(missing: str) -> Any:
    """shap, imported in the worker process only; Unexplainable(`missing`, the fix) where the environment lacks it."""
    try:
        import shap
    except ImportError:  # the environment decides: answered as a 501 naming the fix
        raise Unexplainable(missing) from None
    return shap


def base_value(explainer: Any) -> float:
    """shap's expected output of the model: the positive class's (the last) for a classifier's per class output."""
    return float(np.ravel(explainer.expected_value)[-1])


def positive_class(values: Any) -> np.ndarray:
    """(rows, encoded features) of shap's values: a classifier's per class output is (rows, features, classes) (older
    releases: a list per class), of which the positive class's, the last; a single output is that already."""
    if isinstance(values, list):
        values = values[-1]
    values = np.asarray(values, dtype=float)
    return values[..., -1] if values.ndim == 3 else values


def summed_per_column(values: np.ndarray, groups: np.ndarray, columns: int) -> np.ndarray:
    """(rows, columns): each encoded part's value added onto the input column it came from (`groups`)."""
    per_column = np.zeros((len(values), columns))
    np.add.at(per_column.T, groups, values.T)
    return per_column


def encoded_groups(encode: Any, features: list[str]) -> np.ndarray:
    """For each feature the encoding outputs, the index (in `features`) of the input column it was made from.

    Read from the fitted ColumnTransformer: its transformers' outputs come in order; a transformer that keeps its
    columns one-to-one names them as they came, and an encoder names each part `<column>_<category>` (the
    longest column name that prefixes the part wins, so `loan_type_Auto` is `loan_type`'s, not `loan`'s)."""
    transformer = encode.steps[-1][1] if hasattr(encode, "steps") else encode
    if not hasattr(transformer, "transformers_"):
        raise Unexplainable(f"the encoding ends in {type(transformer).__name__}, not a fitted ColumnTransformer")
    names_in = list(getattr(transformer, "feature_names_in_", features))
    index = {name: i for i, name in enumerate(features)}
    groups: list[int] = []
    for _, step, columns in transformer.transformers_:
        if isinstance(step, str) and step == "drop":
            continue
        if isinstance(columns, slice) or (len(columns) and not isinstance(columns[0], str)):
            columns = list(np.asarray(names_in)[columns])
        columns = [str(c) for c in columns]
        # "passthrough" keeps its columns; a transformer names what it made of them
        outputs = columns if isinstance(step, str) else [str(n) for n in step.get_feature_names_out(columns)]
        for output in outputs:
            source = source_column(output, columns)
            if source not in index:
                raise Unexplainable(f"the model encodes {source!r}, which is not one of the fields a client sends")
            groups.append(index[source])
    return np.asarray(groups, dtype=int)


def source_column(output: str, columns: list[str]) -> str:
    """The input column an encoded feature was made from: itself, or the longest column `<column>_` prefixes."""
    if output in columns:
        return output
    prefixes = [c for c in columns if output.startswith(c + "_")]
    if not prefixes:
        raise Unexplainable(f"cannot tell which input column the encoded feature {output!r} was made from")
    return max(prefixes, key=len)
