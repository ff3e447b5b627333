"""Fairness evidence for one trained version: how its decisions on the hold-out compare between the groups of
each protected attribute, with bootstrap 95% intervals, and the two blocking gates that judge it.

Per group (fairlearn's `MetricFrame` for the figures): rows, base rate, selection rate (share the model flags at
its decision threshold), true- and false-positive rate and ROC-AUC; each with a 95% interval from resampling the
group's hold-out rows (`fairness_bootstrap_samples` times, vectorised: fairlearn's own bootstrap builds a
MetricFrame per resample, 15 s for 100 here). Groups smaller than `fairness_min_group_size` are reported, not
judged.

The gates, per judged attribute, between the two groups furthest apart:
- `selection_rate_ratio`: smallest over largest selection rate >= `min_selection_rate_ratio` (the four-fifths rule);
- `equalized_odds_difference`: the largest gap in true- or false-positive rate <= `max_equalized_odds_difference`
  (fairlearn's definition).
A gate fails when the figure misses its bar *and* the miss is beyond sampling noise: the 95% interval of the
ratio (or gap) between those two groups lies wholly on the wrong side of the bar. The four-fifths rule itself says
so (US Uniform Guidelines, 29 CFR 1607.4(D): a ratio under four-fifths "may not constitute adverse impact where
the differences are based on small numbers and are not statistically significant"); on a 1,000-row hold-out
with 5% positives, the point ratio of a model that never reads gender fell under 0.8 in 8 of 12 trainings measured
on the default data (docs/governance.md), by chance alone. Every figure is in the evidence and the report,
whichever way the gate goes.
"""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fin_behavior.ml.fairness_record import (
    METRICS,
    MISSING_GROUP,
    AttributeFairness,
    Comparison,
    FairnessRecord,
    Figure,
    Group,
)
from fin_behavior.outcome import Outcome
from fin_behavior.settings import Settings

_BOOT_CELLS = 2_000_000  # resample values held at once per group: memory stays flat on a large hold-out

# Groups ------------------------------------------------------------------------------------------------------


def age_band_labels(edges: tuple[int, ...] | list[int]) -> list[str]:
    """(25, 45, 65) -> ['<25', '25-44', '45-64', '65+']."""
    inner = [f"{low}-{high - 1}" for low, high in itertools.pairwise(edges)]
    return [f"<{edges[0]}", *inner, f"{edges[-1]}+"] if edges else ["all ages"]


def protected_groups(rows: pd.DataFrame, attributes: tuple[str, ...], age_bands: tuple[int, ...]) -> pd.DataFrame:
    """One column per protected attribute with each row's group: `age` in its bands, the others as written."""
    missing = [a for a in attributes if a not in rows.columns]
    if missing:
        raise ValueError(
            f"protected attributes {missing} are not columns of the processed dataset (columns: "
            f"{sorted(rows.columns)}); set protected_attributes (FIN_BEHAVIOR_PROTECTED_ATTRIBUTES) to columns it has"
        )
    groups = {}
    for name in attributes:
        column = rows[name]
        if name == "age":
            bins = [-np.inf, *age_bands, np.inf]
            column = pd.cut(column, bins, right=False, labels=age_band_labels(age_bands)).astype(object)
        groups[name] = column.astype(object).where(column.notna(), MISSING_GROUP).astype(str).to_numpy()
    return pd.DataFrame(groups, index=rows.index)


# Figures -----------------------------------------------------------------------------------------------------


def _point_figures(y: np.ndarray, proba: np.ndarray, threshold: float, groups: np.ndarray) -> pd.DataFrame:
    """The per-group point estimates, by fairlearn's MetricFrame."""
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import roc_auc_score

    def at_threshold(metric, y_true, y_score, needs: int | None = None):
        if needs is not None and needs not in set(np.asarray(y_true).tolist()):
            return np.nan  # a rate over the positives (negatives) of a group that has none
        return metric(y_true, (np.asarray(y_score) >= threshold).astype(int))

    def auc(y_true, y_score):
        return float(roc_auc_score(y_true, y_score)) if len(np.unique(y_true)) == 2 else np.nan

    def base_rate(y_true, y_score):
        return float(np.mean(y_true))

    def positives(y_true, y_score):
        return int(np.sum(y_true))

    frame = MetricFrame(
        metrics={
            "rows": count,
            "positives": positives,
            "base_rate": base_rate,
            "selection_rate": partial(at_threshold, selection_rate),
            "true_positive_rate": partial(at_threshold, true_positive_rate, needs=1),
            "false_positive_rate": partial(at_threshold, false_positive_rate, needs=0),
            "roc_auc": auc,
        },
        y_true=y,
        y_pred=proba,
        sensitive_features=pd.Series(groups, name="group"),
    )
    return frame.by_group


def _bootstrap(
    y: np.ndarray, proba: np.ndarray, selected: np.ndarray, samples: int, seed: int
) -> dict[str, np.ndarray]:
    """Each metric over `samples` resamples (with replacement) of one group's rows; NaN where undefined."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    n = len(y)
    out: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    step = max(1, _BOOT_CELLS // max(n, 1))
    for start in range(0, samples, step):
        draws = rng.integers(0, n, (min(step, samples - start), n))
        yb, sb, pb = y[draws], selected[draws], proba[draws]
        pos = yb.sum(axis=1)
        neg = n - pos
        with np.errstate(invalid="ignore", divide="ignore"):
            out["base_rate"].append(pos / n)
            out["selection_rate"].append(sb.mean(axis=1))
            out["true_positive_rate"].append(np.where(pos > 0, (sb & yb).sum(axis=1) / pos, np.nan))
            out["false_positive_rate"].append(np.where(neg > 0, (sb & ~yb).sum(axis=1) / neg, np.nan))
            ranks = rankdata(pb, axis=1)  # Mann-Whitney: AUC from the positives' rank sum
            auc = ((ranks * yb).sum(axis=1) - pos * (pos + 1) / 2) / (pos * neg)
            out["roc_auc"].append(np.where((pos > 0) & (neg > 0), auc, np.nan))
    return {m: np.concatenate(v) for m, v in out.items()}


def _interval(values: np.ndarray) -> tuple[float | None, float | None]:
    finite = values[np.isfinite(values)]
    if len(finite) < 0.5 * len(values):  # undefined in most resamples (e.g. a group without positives)
        return None, None
    return round(float(np.percentile(finite, 2.5)), 6), round(float(np.percentile(finite, 97.5)), 6)


def _figure(value: float, draws: np.ndarray) -> Figure:
    if value is None or not np.isfinite(value):
        return Figure(None, None, None)
    low, high = _interval(draws)
    return Figure(round(float(value), 6), low, high)


def _ratio(a: np.ndarray | float, b: np.ndarray | float) -> Any:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.asarray(b) > 0, np.asarray(a) / np.asarray(b), 1.0)  # nobody selected anywhere: parity


def _selection_rate_ratio(judged: list[str], points: pd.DataFrame, boots: dict, bar: float) -> Comparison | None:
    if len(judged) < 2:
        return None
    rates = points.loc[judged, "selection_rate"]
    low, high = rates.idxmin(), rates.idxmax()
    value = float(_ratio(rates[low], rates[high]))
    draws = _ratio(boots[low]["selection_rate"], boots[high]["selection_rate"])
    interval = _figure(value, draws)
    established = value < bar and interval.high is not None and interval.high < bar
    return Comparison(round(value, 6), interval, str(low), str(high), "selection_rate", established)


def _equalized_odds(y, groups, judged, points, boots, proba, threshold, bar) -> Comparison | None:
    from fairlearn.metrics import equalized_odds_difference

    if len(judged) < 2:
        return None
    mask = np.isin(groups, judged)
    value = float(
        equalized_odds_difference(
            y[mask], (proba[mask] >= threshold).astype(int), sensitive_features=groups[mask], method="between_groups"
        )
    )
    gaps = []
    for rate in ("true_positive_rate", "false_positive_rate"):
        rates = points.loc[judged, rate].dropna()
        if len(rates) >= 2:
            gaps.append((float(rates.max() - rates.min()), rate, rates.idxmin(), rates.idxmax()))
    if not gaps or not np.isfinite(value):
        return None
    _, rate, low, high = max(gaps)
    draws = boots[high][rate] - boots[low][rate]
    interval = _figure(value, draws)
    established = value > bar and interval.low is not None and interval.low > bar
    return Comparison(round(value, 6), interval, str(low), str(high), rate, established)


def assess(
    y_true: pd.Series | np.ndarray,
    proba: np.ndarray,
    threshold: float,
    groups: pd.DataFrame,
    *,
    judged_attributes: tuple[str, ...],
    min_group_size: int,
    bootstrap_samples: int,
    min_selection_rate_ratio: float,
    max_equalized_odds_difference: float,
    seed: int = 0,
) -> FairnessRecord:
    """The fairness evidence of one version on its hold-out (`groups`: protected_groups of the same rows)."""
    import time

    started = time.perf_counter()
    y = np.asarray(y_true).astype(bool)
    proba = np.asarray(proba, dtype=float)
    selected = proba >= threshold
    attributes = []
    for number, attribute in enumerate(groups.columns):
        labels = groups[attribute].to_numpy()
        points = _point_figures(y.astype(int), proba, threshold, labels)
        boots = {
            name: _bootstrap(
                y[labels == name],
                proba[labels == name],
                selected[labels == name],
                bootstrap_samples,
                seed + 1_000 * number + i,
            )
            for i, name in enumerate(points.index)
        }
        order = sorted(points.index, key=_group_order(attribute))
        members = [
            Group(
                str(name),
                int(points.loc[name, "rows"]),
                int(points.loc[name, "positives"]),
                int(points.loc[name, "rows"]) >= min_group_size,
                {m: _figure(points.loc[name, m], boots[name][m]) for m in METRICS},
            )
            for name in order
        ]
        judged = [g.name for g in members if g.judged]
        attributes.append(
            AttributeFairness(
                attribute,
                attribute in judged_attributes,
                members,
                _selection_rate_ratio(judged, points, boots, min_selection_rate_ratio),
                _equalized_odds(
                    y.astype(int), labels, judged, points, boots, proba, threshold, max_equalized_odds_difference
                ),
            )
        )
    return FairnessRecord(
        threshold=threshold,
        rows=len(y),
        min_group_size=min_group_size,
        bootstrap_samples=bootstrap_samples,
        min_selection_rate_ratio=min_selection_rate_ratio,
        max_equalized_odds_difference=max_equalized_odds_difference,
        attributes=attributes,
        seconds=round(time.perf_counter() - started, 3),
    )


def _group_order(attribute: str):
    """Age bands youngest first (their labels do not sort as text); other groups alphabetically."""

    def key(name: str) -> tuple:
        if attribute == "age" and name != MISSING_GROUP:
            digits = "".join(c if c.isdigit() else " " for c in name).split()
            return (0, int(digits[0]) - (1 if name.startswith("<") else 0), name)
        return (1 if name == MISSING_GROUP else 0, 0, name)

    return key


# Gates -------------------------------------------------------------------------------------------------------

_SETTING = {
    "selection_rate_ratio": "min_selection_rate_ratio / FIN_BEHAVIOR_MIN_SELECTION_RATE_RATIO",
    "equalized_odds_difference": "max_equalized_odds_difference / FIN_BEHAVIOR_MAX_EQUALIZED_ODDS_DIFFERENCE",
}


def _describe(attribute: AttributeFairness, gate: str) -> str:
    c: Comparison | None = getattr(attribute, gate)
    if c is None:
        sizes = ", ".join(f"{g.name} {g.rows}" for g in attribute.groups)
        return f"{attribute.attribute}: fewer than two groups of the minimum size to compare (rows: {sizes})"
    by_name = {g.name: g for g in attribute.groups}
    low, high = by_name[c.low_group], by_name[c.high_group]
    what = "ratio" if gate == "selection_rate_ratio" else f"{c.rate.replace('_', ' ')} gap"
    return (
        f"{attribute.attribute}: {what} {c.interval.text()} between {c.low_group} "
        f"({c.rate.replace('_', ' ')} {low.metrics[c.rate].text()}, {low.rows} rows) and {c.high_group} "
        f"({high.metrics[c.rate].text()}, {high.rows} rows)"
    )


def gate(record: FairnessRecord, gate_name: str) -> Outcome:
    """One fairness gate over every judged attribute: actual is the worst attribute's figure."""
    is_ratio = gate_name == "selection_rate_ratio"
    bar = record.min_selection_rate_ratio if is_ratio else record.max_equalized_odds_difference
    judged = [a for a in record.attributes if a.judged]
    compared = [(a, getattr(a, gate_name)) for a in judged if getattr(a, gate_name) is not None]
    failed = [a for a, c in compared if c.established]
    small = [f"{a.attribute} {g.name} ({g.rows} rows)" for a in judged for g in a.groups if not g.judged]
    notes = []
    if small:
        notes.append(f"not judged, under fairness_min_group_size {record.min_group_size}: {', '.join(small)}")
    reported = [a for a in record.attributes if not a.judged]
    if reported:
        notes.append(
            "reported, not judged (fairness_judged_attributes): " + "; ".join(_describe(a, gate_name) for a in reported)
        )
    tail = f" ({'; '.join(notes)})" if notes else ""
    threshold = f"{'>=' if is_ratio else '<='} {bar}"
    if not compared:
        return Outcome(True, "n/a", threshold, f"nothing to judge: no judged attribute has two groups of the minimum "
                       f"size{tail}")  # fmt: skip
    worst_attribute, worst = (min if is_ratio else max)(compared, key=lambda pair: pair[1].value)
    if failed:
        first = failed[0]
        comparison = getattr(first, gate_name)
        side = "below" if is_ratio else "above"
        message = (
            f"{'; '.join(_describe(a, gate_name) for a in failed)}: {comparison.value:.3f} is {side} {bar} and so is "
            f"its whole 95% interval, so the gap is not sampling noise. The model treats these groups differently: "
            f"look for an input that stands in for {first.attribute} (a proxy), and fix the data or the features "
            f"rather than the bar. Setting: {_SETTING[gate_name]}{tail}"
        )
        return Outcome(False, comparison.value, threshold, message)
    meets = worst.value >= bar if is_ratio else worst.value <= bar
    verdict = "meets the bar" if meets else f"misses {bar}, but its 95% interval reaches it (not established)"
    message = (
        f"{'; '.join(_describe(a, gate_name) for a, _ in compared)}; worst: {worst_attribute.attribute} "
        f"{worst.value:.3f} {verdict}{tail}"
    )
    return Outcome(True, worst.value, threshold, message)


# The trained_model stage's use -------------------------------------------------------------------------------


def assess_fairness(
    rows: pd.DataFrame, y_true: pd.Series, proba: np.ndarray, threshold: float, settings: Settings
) -> FairnessRecord:
    """`assess` on a hold-out (`rows` hold the protected attributes whether or not the model reads them)."""
    groups = protected_groups(rows, settings.protected_attributes, settings.age_bands)
    return assess(
        y_true,
        proba,
        threshold,
        groups,
        judged_attributes=settings.fairness_judged_attributes,
        min_group_size=settings.fairness_min_group_size,
        bootstrap_samples=settings.fairness_bootstrap_samples,
        min_selection_rate_ratio=settings.min_selection_rate_ratio,
        max_equalized_odds_difference=settings.max_equalized_odds_difference,
        seed=settings.random_state,
    )


def fairness_metrics(record: FairnessRecord) -> dict[str, float]:
    """The gates' figures per attribute, as MLflow metrics (`fairness.<attribute>.<gate>`)."""
    out = {}
    for a in record.attributes:
        for name in ("selection_rate_ratio", "equalized_odds_difference"):
            comparison = getattr(a, name)
            if comparison is not None:
                out[f"fairness.{a.attribute}.{name}"] = comparison.value
    return out


def write_fairness_plot(record: FairnessRecord, path: Path) -> Path:
    """Selection rate by group with its 95% interval, one panel per attribute; the four-fifths line of the
    highest group drawn in each."""
    from fin_behavior.ml.plots import figure, save

    path.parent.mkdir(parents=True, exist_ok=True)
    plt, fig, _ = figure()
    fig.clf()
    count = max(len(record.attributes), 1)
    fig.set_size_inches(5 * count, 3.6)
    for i, attribute in enumerate(record.attributes, start=1):
        ax = fig.add_subplot(1, count, i)
        names = [g.name for g in attribute.groups]
        rates = [g.metrics["selection_rate"] for g in attribute.groups]
        values = [r.value or 0.0 for r in rates]
        errors = [
            [v - (r.low if r.low is not None else v) for v, r in zip(values, rates, strict=True)],
            [(r.high if r.high is not None else v) - v for v, r in zip(values, rates, strict=True)],
        ]
        colors = ["#4c72b0" if g.judged else "#bbbbbb" for g in attribute.groups]
        ax.bar(names, values, yerr=errors, color=colors, capsize=4)
        judged = [v for v, g in zip(values, attribute.groups, strict=True) if g.judged]
        if judged:
            ax.axhline(max(judged) * record.min_selection_rate_ratio, color="#c44e52", linestyle="--", linewidth=1)
        status = "judged" if attribute.judged else "reported"
        ax.set_title(f"{attribute.attribute} ({status}): selection rate", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    return save(plt, fig, path)
