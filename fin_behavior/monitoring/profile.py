"""A model version's reference profile: how its inputs and its probabilities were distributed when it was
built, shipped inside its bundle (reference_profile.json) so a version and its reference always travel
together; and the population stability index (PSI) of what it now sees against it.

Numbers are cut at the deciles of the training rows (repeated edges merged, so a feature with few values gets
fewer bins); categories keep their training frequencies, plus one bucket for values never seen in training.
Probabilities are cut at the deciles of the served model's probabilities on the hold-out.

PSI = sum over bins of (actual - expected) * ln(actual / expected), shares floored at 1e-4 so an empty bin
counts as rare, not infinite. The usual reading: < 0.1 stable, 0.1-0.2 a moderate shift, >= 0.2 a shift that
needs attention.

The file is typed (`ReferenceProfile`): written only by `write_profile` (compatible.py, when the bundle is built),
read only by `read_profile` (the monitor, `fin-behavior endpoint stats`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict, cast

import numpy as np

from fin_behavior.data.columns import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from fin_behavior.records import BundleFiles, read_json, write_json

if TYPE_CHECKING:
    import pandas as pd

PROFILE_FILE = BundleFiles.PROFILE
UNSEEN = "(not seen in training)"
_QUANTILES = np.linspace(0.1, 0.9, 9)
_FLOOR = 1e-4


class Cut(TypedDict):
    """Bins of a number: `shares[i]` of the values fell below `edges[i]` (and at or above the edge before it);
    the last share is of the values at or above the last edge."""

    edges: list[float]
    shares: list[float]


class NumericReference(Cut):
    kind: Literal["numeric"]


class CategoricalReference(TypedDict):
    kind: Literal["categorical"]
    shares: dict[str, float]  # value -> its share of the training rows


class ReferenceProfile(TypedDict):
    rows: int  # training rows
    features: dict[str, NumericReference | CategoricalReference]
    probability: Cut  # of the served model's hold-out probabilities


def _cut(values: np.ndarray) -> Cut:
    edges = np.unique(np.quantile(values, _QUANTILES))
    return {"edges": edges.tolist(), "shares": shares_in(values, edges).tolist()}


def shares_in(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(1, counts.sum())


def build_profile(train: pd.DataFrame, holdout_proba: Iterable[float]) -> ReferenceProfile:
    """The reference from the training rows (business-form features) and the served model's hold-out
    probabilities."""
    features: dict[str, NumericReference | CategoricalReference] = {}
    for name in NUMERIC_FEATURES:
        features[name] = {"kind": "numeric", **_cut(train[name].dropna().to_numpy(dtype=float))}
    for name in CATEGORICAL_FEATURES:
        shares = train[name].astype(str).value_counts(normalize=True)
        features[name] = {"kind": "categorical", "shares": {str(k): float(v) for k, v in shares.items()}}
    return {
        "rows": len(train),
        "features": features,
        "probability": _cut(np.asarray(list(holdout_proba), dtype=float)),
    }


def write_profile(profile: ReferenceProfile, directory: Path) -> None:
    write_json(directory / PROFILE_FILE, profile)


def read_profile(directory: Path) -> ReferenceProfile:
    return cast(ReferenceProfile, read_json(directory / PROFILE_FILE))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.maximum(expected, _FLOOR), np.maximum(actual, _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class Drift:
    features: dict[str, float]  # PSI per feature, largest first
    probability: float  # PSI of the probabilities
    rows: int


def drift(profile: ReferenceProfile, columns: dict[str, list], probabilities: list[float]) -> Drift:
    """PSI of each feature and of the probabilities in `columns` / `probabilities` against the profile."""
    scores: dict[str, float] = {}
    for name, reference in profile["features"].items():
        values = columns.get(name, [])
        if not values:
            continue
        if reference["kind"] == "numeric":
            edges = np.asarray(reference["edges"])
            scores[name] = psi(np.asarray(reference["shares"]), shares_in(np.asarray(values, dtype=float), edges))
        else:
            known = reference["shares"]
            counts = Counter(values)
            unseen = sum(n for value, n in counts.items() if value not in known)
            buckets = [*known, UNSEEN]
            expected = np.array([known.get(b, 0.0) for b in buckets])
            actual = np.array([counts.get(b, 0) for b in known] + [unseen]) / len(values)
            scores[name] = psi(expected, actual)
    cut = profile["probability"]
    served = shares_in(np.asarray(probabilities, dtype=float), np.asarray(cut["edges"]))
    probability = psi(np.asarray(cut["shares"]), served)
    rows = len(probabilities)
    return Drift(dict(sorted(scores.items(), key=lambda kv: -kv[1])), probability, rows)
