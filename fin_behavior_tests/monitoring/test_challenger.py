"""Champion against challenger on prediction logs written by the service's own writer: the decisions both versions
made paired by request id and row, their agreement and PSI, latency and errors per version; the paired bootstrap
against a direct computation; the verdicts; and the statistics on simulations (a few runs here, the full simulation
in benchmarks/challenger_power.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from fin_behavior.monitoring.challenger import (
    BETTER,
    NO_DIFFERENCE,
    NOT_ENOUGH,
    WORSE,
    Rule,
    compare,
    judge,
    paired_bootstrap,
    read_pairs,
    rows_needed,
)
from fin_behavior.monitoring.challenger_power import Scenario, draw, rates
from fin_behavior.monitoring.labels import read_labels
from fin_behavior.monitoring.profile import psi
from fin_behavior.monitoring.realized import roc_auc
from fin_behavior.monitoring.window import read_window
from fin_behavior.serving.feedback import FeedbackLog, parse_body
from fin_behavior.serving.prediction_log import PredictionLog

RULE = Rule(alpha=0.05, min_gain=0.05, power=0.9, min_rows=200, min_class_rows=50, samples=400)


def _score(directory: Path, color: str, version: str, answers: dict[str, list[float]], latency_s: float) -> None:
    """Requests as the service logs them: `answers` request id -> probabilities, one per row."""
    log = PredictionLog(directory / f"{color}.jsonl", version, 1.0, 1 << 30, 2)
    for request_id, probabilities in answers.items():
        body = json.dumps([{"age": 30}] * len(probabilities)).encode()
        response = {"probabilities": probabilities, "model_version": version, "request_id": request_id}
        log.write(latency_s, 200, len(probabilities), body, {}, json.dumps(response).encode(), request_id)
    log.write(latency_s, 503, 1, b"{}", {}, b"{}", "failed-1")
    log.close()


def test_decisions_are_paired_by_request_id_and_row_and_described(tmp_path):
    logs = tmp_path / "predictions"
    rng = np.random.default_rng(3)
    champion = {f"r{i}": [round(float(rng.random()), 4)] for i in range(300)} | {"multi": [0.9, 0.1]}
    challenger = {rid: [round(min(1.0, p + 0.2), 4) for p in ps] for rid, ps in champion.items() if rid != "r0"}
    challenger["only-challenger"] = [0.5]
    challenger["no-probabilities"] = []  # an answer with nothing to compare: skipped, not fatal
    _score(logs, "blue", "3", champion, 0.010)
    _score(logs, "shadow", "4", challenger, 0.030)
    now = time.time()
    FeedbackLog(logs / "blue.jsonl", 1 << 30, 2).append(
        parse_body(json.dumps({"labels": [{"request_id": "multi", "row": 1, "label": 1}]}).encode(), now), now
    )

    pairs = read_pairs(logs, "3", "4", read_labels(logs, None).table, 0, now + 1)
    assert len(pairs.labels) == 301  # r1..r299 and both rows of "multi": r0 and only-challenger have no pair
    assert list(pairs.labels).count(1) == 1 and list(pairs.labels).count(-1) == 300
    assert np.allclose(pairs.challenger, np.minimum(1.0, pairs.champion + 0.2), atol=1e-9)
    assert len(pairs.alone["3"]) == 302 and len(pairs.alone["4"]) == 302  # "no-probabilities" left out

    window = read_window(logs, 0, now + 1, max_sampled=1)
    result = compare(pairs, window, "3", "4", (0.5, 0.6), RULE)
    f = result.figures
    same = (pairs.champion >= 0.5) == (pairs.challenger >= 0.6)
    assert f["agreement"] == round(float(same.mean()), 4) and 0 < f["agreement"] < 1
    edges = np.unique(np.quantile(pairs.champion, np.linspace(0.1, 0.9, 9)))

    def shares(x):
        return np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1) / len(x)

    assert f["probability_psi"] == round(psi(shares(pairs.champion), shares(pairs.challenger)), 4) > 0.1
    assert f["champion_latency_p95_ms"] == pytest.approx(10.0) and f["challenger_latency_p95_ms"] == pytest.approx(30.0)
    assert f["champion_error_rate"] == round(1 / 302, 6) and f["challenger_requests"] == 303
    assert result.verdict.verdict == NOT_ENOUGH and result.verdict.more_rows == 199
    assert "about 199 more labelled rows" in result.verdict.message
    assert result.outcome().passed


def test_without_a_request_both_scored_the_comparison_says_so():
    empty = read_pairs(Path("/nonexistent"), "3", "4", {}, 0, 1)
    result = compare(empty, read_window(Path("/nonexistent"), 0, 1, 1), "3", "4", (0.5, 0.5), RULE)
    assert result.verdict.verdict == NOT_ENOUGH and "scored by both versions" in result.verdict.message
    assert result.figures["probability_psi"] is None and "agreement" not in result.figures


def test_the_paired_bootstrap_measures_both_versions_on_the_same_resampled_rows():
    y, a, b = draw(Scenario(), 500, np.random.default_rng(0))
    a = np.round(a, 2)  # ties, counted half
    d_auc, d_recall = paired_bootstrap(y, a, b, (0.4, 0.6), 3, seed=7)
    drawn = np.random.default_rng(7).integers(0, 500, (3, 500))
    for i, rows in enumerate(drawn):
        yy, aa, bb = y[rows], a[rows], b[rows]
        assert d_auc[i] == pytest.approx(roc_auc(yy, bb) - roc_auc(yy, aa), abs=1e-12)
        recall = (bb[yy == 1] >= 0.6).mean() - (aa[yy == 1] >= 0.4).mean()
        assert d_recall[i] == pytest.approx(recall, abs=1e-12)


def test_rows_needed_follows_the_normal_approximation():
    # variance 1 per row, gain 0.1, alpha 0.05, power 0.8: (1.96 + 0.8416)^2 / 0.01 = 784.9
    assert rows_needed(1.0, 0.1, 0.05, 0.8) == 785
    assert rows_needed(4.0, 0.1, 0.05, 0.8) == 3140  # ceil of 4 x 784.89


@pytest.mark.parametrize(
    ("challenger_auc", "rows", "expected"),
    [(0.90, 3000, BETTER), (0.60, 3000, WORSE), (0.75, 20000, NO_DIFFERENCE), (0.75, 300, NOT_ENOUGH)],
)
def test_each_verdict(challenger_auc, rows, expected):
    y, a, b = draw(Scenario(challenger_auc=challenger_auc), rows, np.random.default_rng(1))
    verdict = judge(y, a, b, (0.5, 0.5), RULE)
    low, high = verdict.figures["roc_auc_difference_interval"]
    assert verdict.verdict == expected, verdict.message
    assert low <= verdict.figures["roc_auc_difference"] <= high
    if expected == NOT_ENOUGH:
        assert verdict.more_rows == verdict.figures["rows_needed"] - rows > 0
        assert f"about {verdict.more_rows} more labelled rows" in verdict.message


def test_on_simulations_a_better_challenger_is_found_and_an_equal_one_rarely_declared_better():
    """60 runs each (the benchmark runs 1,000): 0.05 more ROC-AUC is declared better at the rows the verdict asked
    for (design power 0.9; the bar allows for the sampling error of 60 runs); an equal one rarely is."""
    better = rates(Scenario(challenger_auc=0.80), 60, RULE, seed=100)
    equal = rates(Scenario(challenger_auc=0.75), 60, RULE, seed=200)
    assert better["better"] >= 0.75, better
    assert equal["better"] <= 0.10, equal


def test_too_few_of_the_rarer_class_asks_for_the_rows_that_bring_it_to_its_minimum():
    y, a, b = draw(Scenario(challenger_auc=0.90, prevalence=0.05), 400, np.random.default_rng(2))
    positives = int(y.sum())
    assert 0 < positives < 50
    verdict = judge(y, a, b, (0.5, 0.5), RULE)
    expected = -(-(50 - positives) * 400 // positives)  # at the observed rate, rounded up
    assert (verdict.verdict, verdict.more_rows) == (NOT_ENOUGH, expected), verdict.message
    assert f"{positives} of the rarer class" in verdict.message
