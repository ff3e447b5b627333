"""Champion against challenger over a window of the prediction log: is the challenger better, and how sure are we?

Without labels: how often the two versions decide alike on the requests both scored (agreement, each at its own
decision threshold), the PSI between their probabilities (on the requests both scored when there are any, else
on all each answered), and each version's latency p95 and error rate.

With labels on the SAME rows (a request both versions scored: a shadow copy logs the challenger's answer under
the live request's id and client; decisions are paired by client, request id and row, and labelled as
`realized_performance` labels them, labels.py: a client's labels only its own decisions): the differences
challenger - champion in ROC-AUC and in recall, each with a paired bootstrap interval at 1 - alpha (95% by
default). Paired: every resample draws rows, and both versions are measured on the same drawn rows, so what the two
share (hard rows, easy rows) cancels out of the difference.

The verdict is DeLong's paired test of the ROC-AUC difference (DeLong, DeLong & Clarke-Pearson 1988): its variance
in closed form from each row's placement among the other class, an interval at 1 - alpha and a z statistic. On
simulations its interval held the level as well as the bootstrap's (benchmarks/README.md); it is the verdict's
because it is exact arithmetic, not resampling: the same rows give the same verdict and the same rows asked for, and
it is cheap enough to check the whole procedure on thousands of simulated runs.

Rows needed: the variance of the difference shrinks as 1/n, so s^2 = n * var is the variance of the paired
difference per labelled row, and a two-sided test at alpha sees a gain delta with power 1 - beta from
n = s^2 * (z(1 - alpha/2) + z(1 - beta))^2 / delta^2 rows (the usual normal approximation; s^2 is measured at the
label mix observed). Before min_labelled_rows paired labelled rows, with at least challenger_min_class_rows of each
class, nothing is tested: the rows asked for are those up to min_labelled_rows, or as many as bring the rarer class
to its minimum at the rate it is observed (with a few dozen positives an interval of a ROC-AUC is too narrow).

A verdict is one planned look, so a look is either (Haybittle-Peto boundary, stated in every message):
- final: there are the rows needed, as measured on the rows there are (95% of them will do: FINAL_SHARE). At alpha:
  "challenger better" (the interval lies above 0), "challenger worse" (below 0), else "no difference detected";
- early: fewer rows than that. A verdict only at p < challenger_early_alpha (0.001): an overwhelming difference
  is not kept waiting; anything weaker is "not enough data yet: about N more labelled rows", N = needed - n.
Testing every look at alpha would spend alpha at each: on simulations a challenger equal to the champion was then
declared better in 5.8% of runs with two looks, where a one-sided 2.5% was meant. Each early look spends at most
challenger_early_alpha / 2 on the "better" side, so k early looks add at most k times that to the final alpha / 2.
A monitor that keeps looking after a final verdict tests again: act on the first final one.

A split (each subject answered by one version) gives no pairs: each version's labelled decisions are its own. The
verdict is then DeLong's test for independent samples (each version's ROC-AUC variance from its own placements,
the difference's variance their sum), with the same looks, rows needed (n counts both versions' rows) and
minimums (of the rows of both, and of the rarer class in each version's). Unpaired, it needs more rows than a shadow
for the same gain: what the two versions share no longer cancels. The design is the experiment's, as the history
recorded it (`challenger_started`: a shadow is paired, a split is not), not guessed from the logs: sampled inputs,
rotated files and late answers all leave decisions without their pair. A split still logs a few requests under both
versions (the challenger answered after the live color stopped waiting, and the client got the champion's answer):
those are the champion's rows. Without a recorded experiment, a window with no pair at all is judged as a split.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from fin_behavior.monitoring.labels import Labels, decision_key
from fin_behavior.monitoring.outcomes import DECISION, bulk, spans
from fin_behavior.monitoring.profile import psi, shares_in
from fin_behavior.monitoring.realized import roc_auc
from fin_behavior.monitoring.window import Window, input_files
from fin_behavior.outcome import Outcome

if TYPE_CHECKING:
    from fin_behavior.settings import Settings

CHECK = "challenger_verdict"
BETTER, WORSE, NO_DIFFERENCE, NOT_ENOUGH = (
    "challenger better",
    "challenger worse",
    "no difference detected",
    "not enough data yet",
)
VERDICTS = (BETTER, WORSE, NO_DIFFERENCE, NOT_ENOUGH)


@dataclass
class Pairs:
    """The decisions of two versions in a window, keyed by decision (the client that asked, request id, row): those
    both made, aligned."""

    champion: np.ndarray  # probabilities, one per decision both versions made
    challenger: np.ndarray
    labels: np.ndarray  # -1: no label (yet)
    alone: dict[str, np.ndarray] = field(default_factory=dict)  # version -> every probability it answered
    # version -> (labels, probabilities) of the labelled decisions only it made (a split's own requests)
    own_labelled: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def read_pairs(log_dir: Path, champion: str, challenger: str, labels: Labels, since: float, until: float) -> Pairs:
    """One pass over the inputs files: each version's probability per decision in [since, until], then the
    decisions both made aligned with their labels (`labels` is read, not consumed: both versions claim it)."""
    wanted = {champion.encode(): champion, challenger.encode(): challenger}
    by_version: dict[str, dict[bytes, float]] = {champion: {}, challenger: {}}
    nameless = False  # a decision on a line that names no client (written before lines named one)
    with bulk():
        for path in input_files(log_dir):
            for mapped, start, end in spans(path):
                for at, version, answered, owned, request_id in DECISION.findall(mapped, start, end):
                    name = wanted.get(version)
                    if name is None or not since <= float(at) <= until:
                        continue
                    try:
                        answers = [float(p) for p in answered.split(b",")]
                    except ValueError:
                        continue  # an answer without probabilities to compare (another writer's line)
                    table, nameless = by_version[name], nameless or not owned
                    for row, probability in enumerate(answers):
                        table.setdefault(decision_key(owned or request_id, row), probability)  # the first stands
    mine, theirs = by_version[champion], by_version[challenger]
    both = [key for key in mine if key in theirs]
    own_labelled = {}
    for name, table, other in ((champion, mine, theirs), (challenger, theirs, mine)):
        alone = [key for key in table if key not in other]
        found = labels.take(alone, nameless, keep=True)
        answered = np.fromiter((table[k] for k in alone), dtype=float, count=len(alone))
        own_labelled[name] = (found[found >= 0], answered[found >= 0])
    return Pairs(
        np.fromiter((mine[k] for k in both), dtype=float, count=len(both)),
        np.fromiter((theirs[k] for k in both), dtype=float, count=len(both)),
        labels.take(both, nameless, keep=True),
        {name: np.frombuffer(array("d", table.values()), dtype=float) for name, table in by_version.items()},
        own_labelled,
    )


def paired_bootstrap(
    labels: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    thresholds: tuple[float, float],
    samples: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """`samples` resamples of the rows (with replacement, the same rows for both versions): the differences
    challenger - champion in ROC-AUC and in recall, one per resample. A resample is a row count per row, so
    every resample's ROC-AUC comes from one sort of the scores (ties counting half)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    positive = labels.astype(float)
    d_auc, d_recall = [], []
    for block in range(0, samples, _BLOCK):  # resamples a block at a time: memory ~ _BLOCK x rows
        drawn = rng.integers(0, n, (min(_BLOCK, samples - block), n))
        counts = np.stack([np.bincount(row, minlength=n) for row in drawn]).astype(float)
        pos, neg = counts * positive, counts * (1.0 - positive)
        with np.errstate(invalid="ignore", divide="ignore"):
            d_auc.append(_auc(pos, neg, challenger) - _auc(pos, neg, champion))
            d_recall.append(_recall_of(pos, challenger, thresholds[1]) - _recall_of(pos, champion, thresholds[0]))
    return np.concatenate(d_auc), np.concatenate(d_recall)


_BLOCK = 250


def _auc(pos: np.ndarray, neg: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of `scores` for each resample (a row of counts of positives `pos` and negatives `neg`); NaN for a
    resample with one class only."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1  # tie group of each sorted row
    neg_in_group = np.add.reduceat(neg[:, order], starts, axis=1)
    below = np.cumsum(neg_in_group, axis=1) - neg_in_group  # negatives strictly below each group
    wins = (pos[:, order] * (below[:, group] + 0.5 * neg_in_group[:, group])).sum(axis=1)
    return wins / (pos.sum(axis=1) * neg.sum(axis=1))


def _recall_of(pos: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    return (pos * (scores >= threshold)).sum(axis=1) / pos.sum(axis=1)


def rows_needed(per_row_variance: float, gain: float, alpha: float, power: float) -> int:
    """Labelled paired rows for a two-sided test at `alpha` to see a difference `gain` with `power`."""
    z = NormalDist().inv_cdf
    return math.ceil(per_row_variance * (z(1 - alpha / 2) + z(power)) ** 2 / gain**2)


def delong(labels: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> tuple[float, float]:
    """DeLong's paired test on labels (0/1) and two versions' scores: the ROC-AUC difference challenger - champion
    and its variance. A positive's placement is the share of negatives it outranks, a negative's the share of
    positives that outrank it (ties half, from midranks); the ROC-AUC is their mean, and the variance of the
    difference is that of the positives' paired placement differences over m plus the negatives' over n."""
    from scipy.stats import rankdata  # imported here: ~0.7 s, and only a tested verdict needs it

    positive = labels == 1
    m, n = int(positive.sum()), int((~positive).sum())
    (pos_a, neg_a), (pos_b, neg_b) = (_placements(rankdata, labels, scores) for scores in (champion, challenger))
    difference = float(pos_b.mean() - pos_a.mean())
    variance = float(np.var(pos_b - pos_a, ddof=1) / m + np.var(neg_b - neg_a, ddof=1) / n)
    return difference, variance


def delong_independent(
    champion_labels: np.ndarray, champion: np.ndarray, challenger_labels: np.ndarray, challenger: np.ndarray
) -> tuple[float, float]:
    """DeLong's test for two ROC-AUCs measured on different rows (a split): the difference challenger - champion
    and its variance, the sum of each ROC-AUC's own."""
    from scipy.stats import rankdata

    figures = []
    for labels, scores in ((champion_labels, champion), (challenger_labels, challenger)):
        pos, neg = _placements(rankdata, labels, scores)
        figures.append((float(pos.mean()), float(np.var(pos, ddof=1) / len(pos) + np.var(neg, ddof=1) / len(neg))))
    (auc_a, var_a), (auc_b, var_b) = figures
    return auc_b - auc_a, var_a + var_b


def _placements(rankdata, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each positive's share of negatives it outranks, each negative's share of positives that outrank it (ties
    half, from midranks)."""
    positive = labels == 1
    m, n = int(positive.sum()), int((~positive).sum())
    rank = rankdata(scores)
    among_own = np.empty(len(scores))
    among_own[positive], among_own[~positive] = rankdata(scores[positive]), rankdata(scores[~positive])
    outranked = rank - among_own  # rows of the other class ranked below it, ties half
    return outranked[positive] / n, 1.0 - outranked[~positive] / m


NO_TEST, EARLY, FINAL = "none", "early", "final"
# A look is final from this share of the rows needed on: the rows needed are re-measured at every look, and once the
# rows asked for are in, about half the time the new figure is a few rows more (simulated owners chased it for up to
# 18 looks, a handful of rows at a time). The power at 95% of the rows is 0.89 where 0.9 is asked.
FINAL_SHARE = 0.95


@dataclass(frozen=True)
class Rule:
    """How a verdict is reached (settings challenger_alpha, challenger_early_alpha, challenger_min_gain,
    challenger_power, min_labelled_rows, challenger_min_class_rows, challenger_bootstrap_samples)."""

    alpha: float
    early_alpha: float
    min_gain: float
    power: float
    min_rows: int
    min_class_rows: int
    samples: int

    @classmethod
    def of(cls, settings: Settings) -> Rule:
        return cls(
            settings.challenger_alpha,
            settings.challenger_early_alpha,
            settings.challenger_min_gain,
            settings.challenger_power,
            settings.min_labelled_rows,
            settings.challenger_min_class_rows,
            settings.challenger_bootstrap_samples,
        )

    def procedure(self, design: str = "paired") -> str:
        test = "DeLong's paired test" if design == "paired" else "DeLong's test for independent samples (a split)"
        return (
            f"{test} at alpha {self.alpha:g} once there are {FINAL_SHARE:.0%} of the rows needed, "
            f"before them a verdict only at p < {self.early_alpha:g} (Haybittle-Peto)"
        )


@dataclass(frozen=True)
class Verdict:
    verdict: str
    message: str
    more_rows: int  # labelled paired rows still wanted (0 once there are enough)
    look: str  # NO_TEST (below the minimums), EARLY (fewer rows than needed) or FINAL
    figures: dict[str, Any]


@dataclass(frozen=True)
class Comparison:
    champion: str
    challenger: str
    figures: dict[str, Any]  # agreement, PSI, latency, errors, and with labels the differences and intervals
    verdict: Verdict
    differences: np.ndarray  # the paired bootstrap's ROC-AUC differences; empty when nothing was tested

    def outcome(self) -> Outcome:
        """The verdict as a check outcome: it fails only for a challenger measurably worse."""
        interval = self.figures.get("roc_auc_difference_interval", "n/a")
        return Outcome(self.verdict.verdict != WORSE, self.verdict.verdict, str(interval), self.verdict.message)


def compare(
    pairs: Pairs,
    window: Window,
    champion: str,
    challenger: str,
    thresholds: tuple[float, float],
    rule: Rule,
    seed: int = 0,
    design: str | None = None,
) -> Comparison:
    """The figures and the verdict (see the module doc) of `challenger` against `champion`; `design`: PAIRED or
    SPLIT, the experiment's as recorded (None: none recorded)."""
    figures: dict[str, Any] = {"champion": champion, "challenger": challenger, "alpha": rule.alpha}
    for role, version in (("champion", champion), ("challenger", challenger)):
        traffic = window.versions.get(version)
        figures[f"{role}_requests"] = traffic.requests if traffic else 0
        figures[f"{role}_latency_p95_ms"] = traffic.latency_percentiles()["p95_ms"] if traffic else None
        figures[f"{role}_error_rate"] = round(traffic.error_rate(), 6) if traffic else None
        figures[f"{role}_decisions"] = len(pairs.alone.get(version, ()))
    paired = len(pairs.labels)
    figures["paired_decisions"] = paired
    if paired:
        same = (pairs.champion >= thresholds[0]) == (pairs.challenger >= thresholds[1])
        figures["agreement"] = round(float(same.mean()), 4)
    labelled = pairs.labels >= 0
    y, a, b = pairs.labels[labelled], pairs.champion[labelled], pairs.challenger[labelled]
    (ya, pa), (yb, pb) = (pairs.own_labelled.get(v, (np.empty(0), np.empty(0))) for v in (champion, challenger))
    split = design == SPLIT if design is not None else not paired and len(ya) > 0 and len(yb) > 0
    on_pairs = paired > 0 and not split
    figures["probability_psi"] = _psi(pairs, champion, challenger, on_pairs)
    figures["probability_psi_on"] = "paired decisions" if on_pairs else "each version's own decisions"
    if split:  # a request both answered is one the challenger answered late: the client got the champion's answer
        ya, pa = np.concatenate([ya, y]), np.concatenate([pa, a])
    figures["design"] = SPLIT if split else PAIRED
    verdict = judge_split(ya, pa, yb, pb, rule) if split else judge(y, a, b, thresholds, rule)
    differences = np.empty(0)
    if split:
        figures["recall_difference"] = round(_recall(yb, pb, thresholds[1]) - _recall(ya, pa, thresholds[0]), 4)
    elif verdict.look != NO_TEST:
        differences, d_recall = paired_bootstrap(y, a, b, thresholds, rule.samples, seed)
        differences, d_recall = differences[~np.isnan(differences)], d_recall[~np.isnan(d_recall)]
        quantiles = [rule.alpha / 2, 1 - rule.alpha / 2]
        figures |= {
            "roc_auc_difference_bootstrap_interval": [round(float(q), 4) for q in np.quantile(differences, quantiles)],
            "recall_difference": round(_recall(y, b, thresholds[1]) - _recall(y, a, thresholds[0]), 4),
            "recall_difference_interval": [round(float(q), 4) for q in np.quantile(d_recall, quantiles)],
            "bootstrap_samples": rule.samples,
        }
    if not paired and not split:
        verdict = replace(verdict, message=verdict.message + "; no decision in the window was scored by both "
                          "versions (a challenger needs a shadow or a split that logs its answers under the live "
                          "requests' ids)")  # fmt: skip
    return Comparison(champion, challenger, figures | verdict.figures, verdict, differences)


def judge(
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    thresholds: tuple[float, float],
    rule: Rule,
) -> Verdict:
    """The verdict (see the module doc) on labelled decisions both versions made: labels `y` (0/1), each
    version's probabilities."""
    return _judge(
        len(y),
        _rarer(y),
        lambda: delong(y, champion, challenger),
        lambda: {
            "positives": int(y.sum()),
            "champion_roc_auc": round(roc_auc(y, champion), 4),
            "challenger_roc_auc": round(roc_auc(y, challenger), 4),
        },
        rule,
        PAIRED,
    )


def judge_split(
    champion_labels: np.ndarray, champion: np.ndarray, challenger_labels: np.ndarray, challenger: np.ndarray, rule: Rule
) -> Verdict:
    """The verdict on a split's labelled decisions: each version's own rows (labels, probabilities)."""
    return _judge(
        len(champion_labels) + len(challenger_labels),
        min(_rarer(champion_labels), _rarer(challenger_labels)),
        lambda: delong_independent(champion_labels, champion, challenger_labels, challenger),
        lambda: {
            "champion_labelled": len(champion_labels),
            "challenger_labelled": len(challenger_labels),
            "positives": int(champion_labels.sum() + challenger_labels.sum()),
            "champion_roc_auc": round(roc_auc(champion_labels, champion), 4),
            "challenger_roc_auc": round(roc_auc(challenger_labels, challenger), 4),
        },
        rule,
        SPLIT,
    )


PAIRED, SPLIT = "paired", "split"  # what a verdict is measured on: the same rows (a shadow) or each its own
_ROWS = {
    PAIRED: "labelled decisions scored by both versions",
    SPLIT: "labelled decisions of a split (each version's own)",
}


def _rarer(y: np.ndarray) -> int:
    return min(int(y.sum()), len(y) - int(y.sum()))


def _judge(n: int, rarer: int, test, aucs, rule: Rule, design: str) -> Verdict:
    """The looks of the module doc, on `n` labelled rows whose rarer class has `rarer` (in each version's rows, for a
    split); `test()` gives the ROC-AUC difference and its variance, `aucs()` the figures measured."""
    figures: dict[str, Any] = {"labelled_pairs" if design == PAIRED else "labelled_rows": n,
                               "procedure": rule.procedure(design)}  # fmt: skip
    if n < rule.min_rows or rarer < rule.min_class_rows:
        more = max(rule.min_rows - n, 1 if rarer else rule.min_class_rows)  # a class not seen: at least its minimum
        if 0 < rarer < rule.min_class_rows:  # the rarer class comes at the rate it is seen
            more = max(more, math.ceil((rule.min_class_rows - rarer) * n / rarer))
        message = (
            f"{NOT_ENOUGH}: about {more} more labelled rows; {n} {_ROWS[design]}, {rarer} of the rarer class "
            f"(min_labelled_rows {rule.min_rows}, challenger_min_class_rows {rule.min_class_rows} of each class) "
            "before anything is tested"
        )
        return Verdict(NOT_ENOUGH, message, more, NO_TEST, figures)
    difference, variance = test()
    se = math.sqrt(variance)
    z = difference / se if se > 0 else 0.0  # no variance: the two rank every pair alike, so no difference
    p = 2 * NormalDist().cdf(-abs(z))
    needed = rows_needed(n * variance, rule.min_gain, rule.alpha, rule.power)
    half = NormalDist().inv_cdf(1 - rule.alpha / 2) * se
    look = FINAL if n >= FINAL_SHARE * needed else EARLY
    figures |= aucs() | {
        "roc_auc_difference": round(difference, 4),
        "roc_auc_difference_interval": [round(difference - half, 4), round(difference + half, 4)],
        "interval_confidence": 1 - rule.alpha,
        "z": round(z, 3),
        "p_value": float(f"{p:.3g}"),
        "look": look,
        "rows_needed": needed,
    }
    measured = (
        f"ROC-AUC difference {difference:+.4f}, {1 - rule.alpha:.0%} interval [{difference - half:+.4f}, "
        f"{difference + half:+.4f}], p = {p:.3g} on {n} {_ROWS[design]}"
    )
    power_of = (
        f"a gain of {rule.min_gain:g} in ROC-AUC is seen with power {rule.power:g} from about {needed} rows (DeLong's "
        f"variance of the {'paired ' if design == PAIRED else ''}difference per row)"
    )
    how = f"{rule.procedure(design)}; {power_of}"
    if p < (rule.alpha if look == FINAL else rule.early_alpha):  # at FINAL: the interval lies off 0
        name = BETTER if difference > 0 else WORSE
        when = "" if look == FINAL else f", an early look before the {needed} rows needed"
        return Verdict(name, f"{name}: {measured}{when}; {how}", 0, look, figures)
    if look == FINAL:
        return Verdict(NO_DIFFERENCE, f"{NO_DIFFERENCE}: {measured}; {how}", 0, look, figures)
    more = needed - n
    return Verdict(NOT_ENOUGH, f"{NOT_ENOUGH}: about {more} more labelled rows; {measured}; {how}", more, look, figures)


def _recall(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    positives = labels.sum()
    return float((labels * (scores >= threshold)).sum() / positives) if positives else 0.0


def _psi(pairs: Pairs, champion: str, challenger: str, on_pairs: bool) -> float | None:
    """PSI of the challenger's probabilities against the champion's, cut at the champion's deciles: on the
    decisions both made (`on_pairs`), else on each version's own."""
    if on_pairs:
        mine, theirs = pairs.champion, pairs.challenger
    else:
        mine, theirs = pairs.alone.get(champion, np.empty(0)), pairs.alone.get(challenger, np.empty(0))
    if not len(mine) or not len(theirs):
        return None
    edges = np.unique(np.quantile(mine, np.linspace(0.1, 0.9, 9)))
    return round(psi(shares_in(mine, edges), shares_in(theirs, edges)), 4)
