"""How the challenger verdict behaves, on simulated champion/challenger pairs whose true ROC-AUCs are known.

The binormal model: a row is positive with chance `prevalence`; each version's score is its signal (d when
positive, 0 when not) plus a standard normal noise, the two noises correlated `correlation` (two models of the
same rows make similar mistakes). Its true ROC-AUC is Phi(d / sqrt(2)). The probability served is the logistic of
the score, decided at 0.5.

One run is what a model owner sees: the verdict on a first `pilot` labelled rows (while it has no variance yet,
too few rows or too few of a class, nothing is tested: the rows it asks for come in first); when the first tested
look says "not enough data yet: about N more", N more rows come in and the verdict is taken again on all of them
(one second look, as asked). benchmarks/challenger_power.py runs many;
fin_behavior_tests/monitoring/test_challenger.py a few.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from fin_behavior.monitoring.challenger import BETTER, NOT_ENOUGH, Rule, judge


@dataclass(frozen=True)
class Scenario:
    champion_auc: float = 0.75
    challenger_auc: float = 0.80
    prevalence: float = 0.2
    correlation: float = 0.6
    pilot: int = 400


def draw(scenario: Scenario, rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`rows` labelled rows: labels, the champion's and the challenger's probabilities."""
    signal = [math.sqrt(2) * NormalDist().inv_cdf(auc) for auc in (scenario.champion_auc, scenario.challenger_auc)]
    y = (rng.random(rows) < scenario.prevalence).astype(np.int8)
    shared = rng.normal(size=rows)
    rho = scenario.correlation
    scores = [y * d + rho * shared + math.sqrt(1 - rho**2) * rng.normal(size=rows) for d in signal]
    champion, challenger = (1 / (1 + np.exp(-(s - 1.0))) for s in scores)
    return y, champion, challenger


@dataclass(frozen=True)
class Run:
    first: str  # the verdict at the first tested look
    final: str  # the verdict after the rows it asked for (the same as `first` when it asked for none)
    rows: int  # labelled rows the final verdict was taken on


def one_run(scenario: Scenario, seed: int, rule: Rule) -> Run:
    """One owner's experience (module doc)."""
    data, resampling = np.random.SeedSequence(seed).spawn(2)  # independent streams for the rows and the bootstrap
    rng = np.random.default_rng(data)
    bootstrap_seed = int(resampling.generate_state(1)[0])
    y, a, b = draw(scenario, scenario.pilot, rng)
    first = judge(y, a, b, (0.5, 0.5), rule, bootstrap_seed)
    for _ in range(10):  # before a variance (too few rows, or of a class) nothing is tested: gather what it asks
        if first.verdict != NOT_ENOUGH or len(first.differences):
            break
        y, a, b = _more(scenario, first.more_rows, rng, (y, a, b))
        first = judge(y, a, b, (0.5, 0.5), rule, bootstrap_seed)
    if first.verdict != NOT_ENOUGH:
        return Run(first.verdict, first.verdict, len(y))
    y, a, b = _more(scenario, first.more_rows, rng, (y, a, b))
    return Run(first.verdict, judge(y, a, b, (0.5, 0.5), rule, bootstrap_seed).verdict, len(y))


def _more(scenario: Scenario, rows: int, rng: np.random.Generator, have: tuple) -> tuple:
    return tuple(np.concatenate(pair) for pair in zip(have, draw(scenario, rows, rng), strict=True))


def rates(scenario: Scenario, runs: int, rule: Rule, seed: int = 0) -> dict[str, float]:
    """Over `runs` runs: the share declared better (at either look: a verdict other than "not enough" is final),
    at the first look alone, still short of rows after the second, and the median rows the verdict was taken on."""
    done = [one_run(scenario, seed + i, rule) for i in range(runs)]
    finals = Counter(r.final for r in done)
    return {
        "runs": runs,
        "better": finals[BETTER] / runs,
        "better_at_first_look": sum(r.first == BETTER for r in done) / runs,
        "still_not_enough": finals[NOT_ENOUGH] / runs,
        "median_rows": float(np.median([r.rows for r in done])),
    }
