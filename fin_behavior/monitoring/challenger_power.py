"""How the challenger verdict behaves, on simulated champion/challenger pairs whose true ROC-AUCs are known.

The binormal model: a row is positive with chance `prevalence`; each version's score is its signal (d when
positive, 0 when not) plus a standard normal noise, the two noises correlated `correlation` (two models of the
same rows make similar mistakes). Its true ROC-AUC is Phi(d / sqrt(2)). The probability served is the logistic of
the score, decided at 0.5.

One run is what a model owner sees who does what the verdict says: a verdict on a first `pilot` labelled rows;
while it says "not enough data yet: about N more labelled rows", N more rows come in and the verdict is taken again
on all of them, until one is not "not enough" (or `max_looks` looks have been taken). Below the minimums (too few
rows, or of a class) nothing is tested; after them every look is a test: early (fewer rows than needed, a verdict
only at p < early_alpha) or final (the rows needed, at alpha). benchmarks/challenger_power.py runs many;
fin_behavior_tests/monitoring/test_challenger.py a few.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from fin_behavior.monitoring.challenger import BETTER, EARLY, NO_TEST, NOT_ENOUGH, WORSE, Rule, judge


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
    verdict: str  # the first verdict other than "not enough data yet" (or that, after max_looks looks)
    look: str  # the kind of look it came at: EARLY or FINAL (NO_TEST: it never got past the minimums)
    tested_looks: int  # looks past the minimums, that one included
    rows: int  # labelled rows it was taken on


MAX_LOOKS = 20  # looks in all, the untested ones below the minimums included


def one_run(scenario: Scenario, seed: int, rule: Rule) -> Run:
    """One owner's experience (module doc)."""
    rng = np.random.default_rng(seed)
    y, a, b = draw(scenario, scenario.pilot, rng)
    tested = 0
    for _ in range(MAX_LOOKS):
        verdict = judge(y, a, b, (0.5, 0.5), rule)
        tested += verdict.look != NO_TEST
        if verdict.verdict != NOT_ENOUGH:
            break
        y, a, b = (np.concatenate(pair) for pair in zip((y, a, b), draw(scenario, verdict.more_rows, rng), strict=True))
    return Run(verdict.verdict, verdict.look, tested, len(y))


def rates(scenario: Scenario, runs: int, rule: Rule, seed: int = 0) -> dict[str, float]:
    """Over `runs` runs: how many were declared better (at any look), worse, and better at an early look; the share
    still short of rows after MAX_LOOKS looks; the median tested looks and rows of the verdict."""
    done = [one_run(scenario, seed + i, rule) for i in range(runs)]
    verdicts = Counter(r.verdict for r in done)
    return {
        "runs": runs,
        "better_runs": verdicts[BETTER],
        "better": verdicts[BETTER] / runs,
        "worse": verdicts[WORSE] / runs,
        "better_early": sum(r.verdict == BETTER and r.look == EARLY for r in done) / runs,
        "still_not_enough": verdicts[NOT_ENOUGH] / runs,
        "median_tested_looks": float(np.median([r.tested_looks for r in done])),
        "median_rows": float(np.median([r.rows for r in done])),
    }
