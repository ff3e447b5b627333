"""Realized performance of one served version: its decisions in the window whose outcomes came back, measured
as they were decided (the probability it answered, its own decision threshold), next to the figures it was
validated with on the hold-out; and a label-free estimate for the decisions whose outcomes are not in yet.

The estimate is confidence-based (CBPE, as NannyML names it): if the probabilities are calibrated, a decision
with probability q is a positive with chance q, so the expected confusion matrix at the threshold and the
expected ROC-AUC (the chance that a positive ranks above a negative, each row weighted q as a positive and 1 - q
as a negative) follow from the probabilities alone. It assumes (1) calibration: the platform's forest is not
calibrated, so the probabilities are first mapped to the positive rate observed in their decile among this
version's labelled decisions (histogram binning; without labelled decisions the raw probabilities are used and
the estimate says so); (2) no concept drift: P(outcome | inputs) is what it was when the map was fitted. Input
drift is what it can see; a change in what the inputs mean (labels flipping for a segment) it cannot, and only
the realized figures will show.

All in numpy, O(n log n): ROC-AUC is the Mann-Whitney statistic over ranks with ties averaged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fin_behavior.monitoring.labels import read_labels
from fin_behavior.monitoring.outcomes import Decisions, join
from fin_behavior.outcome import Outcome
from fin_behavior.settings import Settings

CHECKS = {  # name -> what it asks
    "label_coverage": "Enough labelled decisions in the window (min_labelled_rows, both classes, min_label_coverage) "
    "for the realized checks to judge; below it they say 'not enough labels' and pass.",
    "realized_roc_auc": "Realized ROC-AUC >= the version's validation ROC-AUC minus realized_tolerance.",
    "realized_recall": "Realized recall at the version's threshold >= its validation recall minus realized_tolerance.",
}
_BINS = 10


def roc_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """P(a positive scores above a negative), ties counting half. With `weights` (each row a positive with weight
    w and a negative with 1 - w), the expected ROC-AUC of calibrated scores, pairs of a row with itself left out."""
    positive = labels.astype(float) if weights is None else weights
    negative = 1.0 - positive
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    neg_in_group = np.bincount(group, weights=negative, minlength=len(counts))
    below = np.concatenate(([0.0], np.cumsum(neg_in_group)[:-1]))  # negatives with a strictly lower score
    wins = positive * (below[group] + 0.5 * (neg_in_group[group] - negative))  # ties half; oneself excluded
    pairs = positive.sum() * negative.sum() - float(np.sum(positive * negative))
    return float(wins.sum() / pairs) if pairs > 0 else float("nan")


def confusion(labels: np.ndarray, decided: np.ndarray) -> dict[str, float]:
    tp = float(np.sum(labels * decided))
    predicted, positives = float(decided.sum()), float(labels.sum())
    return {
        "precision": tp / predicted if predicted else 0.0,
        "recall": tp / positives if positives else 0.0,
    }


def calibration(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """Brier score, expected calibration error over ten equal-width bins, and the bins (for the plot)."""
    bins = np.minimum((probabilities * _BINS).astype(int), _BINS - 1)
    count = np.bincount(bins, minlength=_BINS)
    mean_p = np.bincount(bins, weights=probabilities, minlength=_BINS) / np.maximum(count, 1)
    rate = np.bincount(bins, weights=labels.astype(float), minlength=_BINS) / np.maximum(count, 1)
    return {
        "brier": float(np.mean((probabilities - labels) ** 2)),
        "ece": float(np.sum(count * np.abs(mean_p - rate)) / max(1, len(labels))),
        "bins": {"count": count.tolist(), "mean_probability": mean_p.tolist(), "positive_rate": rate.tolist()},
    }


def measure(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    return {
        "rows": len(labels),
        "positives": int(labels.sum()),
        "roc_auc": roc_auc(labels, probabilities),
        **confusion(labels, (probabilities >= threshold).astype(float)),
        **calibration(labels, probabilities),
    }


def calibrator(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Histogram binning: the deciles of the labelled probabilities and the positive rate in each (smoothed
    towards the overall rate); None with too few labelled decisions to fit it."""
    if len(labels) < 10 * _BINS or labels.min() == labels.max():
        return None
    edges = np.unique(np.quantile(probabilities, np.linspace(0.1, 0.9, _BINS - 1)))
    bins = np.searchsorted(edges, probabilities, side="right")
    count = np.bincount(bins, minlength=len(edges) + 1)
    positives = np.bincount(bins, weights=labels.astype(float), minlength=len(edges) + 1)
    prior = labels.mean()
    return edges, (positives + prior) / (count + 1)


def estimate(probabilities: np.ndarray, threshold: float, fitted: tuple[np.ndarray, np.ndarray] | None) -> dict:
    """The expected ROC-AUC, precision and recall of decisions without labels (see the module doc)."""
    if not len(probabilities):
        return {"rows": 0}
    q = probabilities if fitted is None else fitted[1][np.searchsorted(fitted[0], probabilities, side="right")]
    decided = (probabilities >= threshold).astype(float)
    expected_tp, predicted = float(np.sum(q * decided)), float(decided.sum())
    return {
        "rows": len(probabilities),
        "roc_auc": roc_auc(np.zeros(len(q)), probabilities, weights=q),
        "precision": expected_tp / predicted if predicted else 0.0,
        "recall": expected_tp / float(q.sum()) if q.sum() else 0.0,
        "calibrated": fitted is not None,
    }


@dataclass(frozen=True)
class Realized:
    """One version over the window: figures, the estimate for what is pending, and the verdicts."""

    version: str
    figures: dict[str, Any]  # decisions, labelled, coverage, and the realized metrics
    validation: dict[str, float]
    estimate: dict[str, Any]
    checks: dict[str, Outcome]
    timeline: list[dict[str, Any]]  # realized ROC-AUC by slice of prediction time

    @property
    def failed(self) -> dict[str, Outcome]:
        return {name: o for name, o in self.checks.items() if not o.passed}


def judge(
    decisions: Decisions, validation: dict[str, float], threshold: float, settings: Settings, matured_until: float
) -> Realized:
    """Decisions made until `matured_until` are judged on their labels; younger ones (the label delay) estimated."""
    times, probabilities, labels = decisions.arrays()
    matured = times <= matured_until
    labelled = matured & (labels >= 0)
    y, p = labels[labelled].astype(float), probabilities[labelled]
    coverage = float(labelled.sum() / max(1, matured.sum()))
    figures: dict[str, Any] = {
        "decisions": int(matured.sum()),
        "labelled": int(labelled.sum()),
        "coverage": round(coverage, 4),
        "pending": int((~matured).sum()),
    }
    enough = len(y) >= settings.min_labelled_rows and 0 < y.sum() < len(y) and coverage >= settings.min_label_coverage
    checks = {"label_coverage": _coverage(figures, y, enough, settings)}
    timeline: list[dict[str, Any]] = []
    if enough:
        figures |= measure(y, p, threshold)
        checks |= {
            name: _against(figures[metric], validation.get(metric), metric, settings)
            for name, metric in (("realized_roc_auc", "roc_auc"), ("realized_recall", "recall"))
        }
        timeline = _timeline(times[labelled], y, p, settings.min_labelled_rows)
    else:
        quiet = f"not enough labels for a verdict: {checks['label_coverage'].message}"
        checks |= {name: Outcome(True, "n/a", "n/a", quiet) for name in ("realized_roc_auc", "realized_recall")}
    fitted = calibrator(y, p)
    pending = probabilities[~matured] if (~matured).any() else probabilities[matured & (labels < 0)]
    return Realized(decisions.version, figures, validation, estimate(pending, threshold, fitted), checks, timeline)


def _coverage(figures: dict[str, Any], y: np.ndarray, enough: bool, settings: Settings) -> Outcome:
    message = (
        f"{figures['labelled']} of {figures['decisions']} decisions in the window labelled ({figures['coverage']:.1%}; "
        f"{int(y.sum())} positive), {'enough' if enough else 'not enough'} for a verdict (settings min_labelled_rows "
        f"{settings.min_labelled_rows} with both classes, min_label_coverage {settings.min_label_coverage:g})"
    )
    return Outcome(enough, figures["labelled"], settings.min_labelled_rows, message)


def _against(actual: float, validated: float | None, metric: str, settings: Settings) -> Outcome:
    if validated is None:
        return Outcome(False, round(actual, 4), "n/a", f"no validation {metric} recorded for this version")
    bar = validated - settings.realized_tolerance
    passed = actual >= bar
    return Outcome(
        bool(passed),
        round(actual, 4),
        round(bar, 4),
        f"realized {metric} {actual:.4f} vs validation {validated:.4f} (bar {bar:.4f}: validation minus "
        f"realized_tolerance {settings.realized_tolerance:g})" + ("" if passed else ": the model decays in production"),
    )


def _timeline(times: np.ndarray, y: np.ndarray, p: np.ndarray, min_rows: int) -> list[dict[str, Any]]:
    """Realized ROC-AUC over up to ten equal slices of prediction time (a slice with too few labels is left out)."""
    order = np.argsort(times, kind="stable")
    slices = max(1, min(10, len(order) // max(1, min_rows // 2)))
    points = []
    for part in np.array_split(order, slices):
        if len(part) and 0 < y[part].sum() < len(part):
            points.append({"time": float(times[part].mean()), "rows": len(part), "roc_auc": roc_auc(y[part], p[part])})
    return points


@dataclass(frozen=True)
class OutcomeWindow:
    """One pass: every version with decisions in the window, judged, and what happened to the labels."""

    since: float
    matured_until: float
    results: dict[str, Realized]
    label_counts: dict[str, int]  # labels, matched, unknown, invalid, duplicates, files
    window_seconds: float

    def describe(self) -> str:
        c = self.label_counts
        return (
            f"decisions from {_utc(self.since)} to {_utc(self.matured_until)} judged; {c['labels']} labels read from "
            f"{c['files']} file(s): {c['matched']} matched, {c['unknown']} unknown id, {c['invalid']} invalid, "
            f"{c['duplicates']} duplicate"
        )

    def key(self, version: str) -> str:
        """The window as the decay sensor's run key: one retrain per version per window length."""
        return f"v{version}-w{int(self.matured_until // self.window_seconds)}"

    @staticmethod
    def quiet(version: str, settings: Settings) -> Realized:
        """A version with no decision in the window: nothing to judge, and the checks say so."""
        return judge(Decisions(version), {}, 0.5, settings, 0.0)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def evaluate(
    settings: Settings,
    log_dir: Path,
    ground_truth: Path | None,
    figures_of: Callable[[str], tuple[float, dict[str, float]] | None],
    now: float | None = None,
) -> OutcomeWindow:
    """Labels read, joined to the decisions of the window, each version judged against its own threshold and
    validation figures (`figures_of(version)`: (threshold, metrics), or None when the version is unknown)."""
    until = time.time() if now is None else now
    matured_until = until - settings.label_delay_hours * 3600
    window_seconds = settings.outcome_window_hours * 3600
    since = matured_until - window_seconds
    labels = read_labels(log_dir, ground_truth)
    read = len(labels)
    if not read:  # nothing to judge, and no labels to calibrate an estimate with: the log is not read at all
        return OutcomeWindow(since, matured_until, {}, labels.counts() | {"matched": 0, "unknown": 0}, window_seconds)
    joined = join(log_dir, labels, since, until)
    results = {}
    for version, decisions in joined.versions.items():
        known = figures_of(version)
        if known is not None:
            results[version] = judge(decisions, known[1], known[0], settings, matured_until)
    counts = labels.counts() | {"labels": read, "matched": joined.matched, "unknown": joined.unknown}
    return OutcomeWindow(since, matured_until, results, counts, window_seconds)
