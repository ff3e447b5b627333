"""Champion against challenger on prediction logs written by the service's own writer: the decisions both versions
made paired by request id and row, their agreement and PSI, latency and errors per version; the paired bootstrap and
DeLong's test against direct computations; the verdicts and the looks they come at; and the statistics on simulations
(a few hundred runs here, the full simulation in benchmarks/challenger_power.py)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fin_behavior.monitoring.challenger import (
    BETTER,
    EARLY,
    FINAL,
    NO_DIFFERENCE,
    NO_TEST,
    NOT_ENOUGH,
    PAIRED,
    SPLIT,
    WORSE,
    Rule,
    compare,
    delong,
    delong_independent,
    judge,
    judge_split,
    paired_bootstrap,
    read_pairs,
    rows_needed,
)
from fin_behavior.monitoring.challenger_power import Scenario, draw, rates
from fin_behavior.monitoring.labels import Labels, read_labels
from fin_behavior.monitoring.profile import psi
from fin_behavior.monitoring.realized import roc_auc
from fin_behavior.monitoring.window import read_window
from fin_behavior.serving.feedback import FeedbackLog, parse_body
from fin_behavior.serving.prediction_log import PredictionLog, client_id
from fin_behavior.settings import Settings

RULE = Rule(alpha=0.05, early_alpha=0.001, min_gain=0.05, power=0.9, min_rows=200, min_class_rows=50, samples=400)


def _score(
    directory: Path, color: str, version: str, answers: dict[str, list[float]], latency_s: float, client: str = ""
) -> None:
    """Requests as the service logs them: `answers` request id -> probabilities, one per row, asked with `client`'s
    key (a shadow logs its copies under the live request's client)."""
    log = PredictionLog(directory / f"{color}.jsonl", version, 1.0, 1 << 30, 2)
    for request_id, probabilities in answers.items():
        body = json.dumps([{"age": 30}] * len(probabilities)).encode()
        response = {"probabilities": probabilities, "model_version": version, "request_id": request_id}
        answer = json.dumps(response).encode()
        log.write(latency_s, 200, len(probabilities), body, {}, answer, request_id, client=client)
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

    pairs = read_pairs(logs, "3", "4", read_labels(logs, None), 0, now + 1)
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


def test_a_clients_labels_pair_only_its_own_decisions_whoever_posted_first(tmp_path):
    logs = tmp_path / "predictions"
    a, b = client_id(b"team a's key"), client_id(b"team b's key")
    ours = {f"r{i}": [round(0.1 + 0.2 * i, 2)] for i in range(4)}
    for color, version, shift in (("blue", "3", 0.0), ("shadow", "4", 0.05)):
        _score(logs, color, version, {rid: [p + shift for p in ps] for rid, ps in ours.items()}, 0.01, client=a)
        _score(logs, color, version, {"r0": [0.5 + shift]}, 0.01, client=b)  # b's own request, under an id a used
    now = time.time()
    feedback = FeedbackLog(logs / "blue.jsonl", 1 << 30, 2)
    first = [{"request_id": rid, "label": 0} for rid in ours]  # b labels every id a used, before a does
    feedback.append(parse_body(json.dumps({"labels": first}).encode(), now), now, b)
    true = [{"request_id": rid, "label": y} for rid, y in zip(("r0", "r1", "r2"), (1, 0, 1), strict=True)]
    feedback.append(parse_body(json.dumps({"labels": true}).encode(), now), now, a)

    pairs = read_pairs(logs, "3", "4", read_labels(logs, None), 0, now + 1)
    assert list(pairs.champion) == [0.1, 0.3, 0.5, 0.7, 0.5] and list(pairs.challenger) == pytest.approx(
        [0.15, 0.35, 0.55, 0.75, 0.55]
    )
    assert list(pairs.labels) == [1, 0, 1, -1, 0]  # a's labels on a's requests, b's only on b's own "r0"


def test_without_a_request_both_scored_the_comparison_says_so():
    empty = read_pairs(Path("/nonexistent"), "3", "4", Labels(), 0, 1)
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


def test_delong_is_the_placements_of_each_class_among_the_other():
    y, a, b = draw(Scenario(prevalence=0.3), 400, np.random.default_rng(4))
    a = np.round(a, 2)  # ties, counted half

    def placements(scores):  # every positive against every negative: 1 above, 0.5 tied
        wins = (scores[y == 1][:, None] > scores[y == 0][None, :]) + 0.5 * (
            scores[y == 1][:, None] == scores[y == 0][None, :]
        )
        return wins.mean(axis=1), wins.mean(axis=0)  # per positive: negatives below; per negative: positives above

    (pos_a, neg_a), (pos_b, neg_b) = placements(a), placements(b)
    m, n = len(pos_a), len(neg_a)
    difference, variance = delong(y, a, b)
    assert difference == pytest.approx(roc_auc(y, b) - roc_auc(y, a), abs=1e-12)
    assert variance == pytest.approx(np.var(pos_b - pos_a, ddof=1) / m + np.var(neg_b - neg_a, ddof=1) / n, rel=1e-9)


def test_delong_variance_is_the_spread_of_the_difference_across_samples():
    """Over 400 independent samples of 600 rows at a 5% positive rate, the standard deviation of the measured
    differences is what DeLong's variance says it is (within sampling error), and it is not the unpaired one."""
    rng = np.random.default_rng(5)
    measured = [delong(*draw(Scenario(challenger_auc=0.75, prevalence=0.05), 600, rng)) for _ in range(400)]
    differences, variances = np.array(measured).T
    assert np.std(differences, ddof=1) == pytest.approx(np.sqrt(variances.mean()), rel=0.1)


def test_rows_needed_follows_the_normal_approximation():
    # variance 1 per row, gain 0.1, alpha 0.05, power 0.8: (1.96 + 0.8416)^2 / 0.01 = 784.9
    assert rows_needed(1.0, 0.1, 0.05, 0.8) == 785
    assert rows_needed(4.0, 0.1, 0.05, 0.8) == 3140  # ceil of 4 x 784.89


@pytest.mark.parametrize(
    ("challenger_auc", "rows", "expected", "look"),
    [(0.90, 3000, BETTER, FINAL), (0.60, 3000, WORSE, FINAL), (0.75, 20000, NO_DIFFERENCE, FINAL),
     (0.75, 300, NOT_ENOUGH, EARLY)],
)  # fmt: skip
def test_each_verdict(challenger_auc, rows, expected, look):
    y, a, b = draw(Scenario(challenger_auc=challenger_auc), rows, np.random.default_rng(1))
    verdict = judge(y, a, b, (0.5, 0.5), RULE)
    f = verdict.figures
    low, high = f["roc_auc_difference_interval"]
    assert (verdict.verdict, verdict.look) == (expected, look), verdict.message
    assert low <= f["roc_auc_difference"] <= high and (low > 0 or high < 0) == (expected in (BETTER, WORSE))
    assert "DeLong's paired test at alpha 0.05" in verdict.message and "p < 0.001 (Haybittle-Peto)" in verdict.message
    assert (0.95 * f["rows_needed"] <= rows) == (look == FINAL)
    if expected == NOT_ENOUGH:
        assert verdict.more_rows == f["rows_needed"] - rows > 0
        assert f"about {verdict.more_rows} more labelled rows" in verdict.message


def test_before_the_rows_needed_only_an_overwhelming_difference_is_a_verdict():
    """Haybittle-Peto: the same rows, p between 0.001 and 0.05, are "not enough data yet" at an early look and
    "challenger better" once they are the rows needed; p far below 0.001 is a verdict at an early look."""
    y, a, b = draw(Scenario(challenger_auc=0.80), 800, np.random.default_rng(11))
    early = judge(y, a, b, (0.5, 0.5), RULE)
    assert early.look == EARLY and 0.001 < early.figures["p_value"] < 0.05, early.message
    assert early.verdict == NOT_ENOUGH and early.more_rows == early.figures["rows_needed"] - 800
    enough = judge(y, a, b, (0.5, 0.5), replace(RULE, min_gain=0.15))  # a larger gain needs fewer rows
    assert (enough.verdict, enough.look) == (BETTER, FINAL), enough.message
    assert enough.figures["p_value"] == early.figures["p_value"]

    y, a, b = draw(Scenario(challenger_auc=0.90), 3000, np.random.default_rng(1))
    overwhelming = judge(y, a, b, (0.5, 0.5), replace(RULE, min_gain=0.005))
    assert (overwhelming.verdict, overwhelming.look) == (BETTER, EARLY), overwhelming.message
    assert overwhelming.figures["p_value"] < 0.001 and "an early look before the" in overwhelming.message
    never_early = judge(y, a, b, (0.5, 0.5), replace(RULE, min_gain=0.005, early_alpha=0.0))
    assert never_early.verdict == NOT_ENOUGH


def test_an_early_alpha_at_or_above_alpha_is_refused():
    with pytest.raises(ValueError, match=r"challenger_early_alpha .* must be below challenger_alpha"):
        Settings(challenger_alpha=0.05, challenger_early_alpha=0.05)


def test_on_simulations_a_better_challenger_is_found_and_an_equal_one_rarely_declared_better():
    """300 runs each (the benchmark runs thousands): 0.05 more ROC-AUC is declared better at the rows the verdict
    asked for (design power 0.9); an equal one is declared better in at most 5%, and less often than when every look
    is tested at alpha (early_alpha = alpha: the looks before the rows needed spend alpha too)."""
    better = rates(Scenario(challenger_auc=0.80), 300, RULE, seed=100)
    assert better["better"] >= 0.85 and better["still_not_enough"] == 0, better
    equal = rates(Scenario(challenger_auc=0.75, prevalence=0.05), 300, RULE, seed=200)
    every_look = rates(Scenario(challenger_auc=0.75, prevalence=0.05), 300, replace(RULE, early_alpha=0.05), seed=200)
    assert equal["better"] <= 0.05 and equal["better"] < every_look["better"], (equal, every_look)


def test_too_few_of_the_rarer_class_asks_for_the_rows_that_bring_it_to_its_minimum():
    y, a, b = draw(Scenario(challenger_auc=0.90, prevalence=0.05), 400, np.random.default_rng(2))
    positives = int(y.sum())
    assert 0 < positives < 50
    verdict = judge(y, a, b, (0.5, 0.5), RULE)
    expected = -(-(50 - positives) * 400 // positives)  # at the observed rate, rounded up
    assert (verdict.verdict, verdict.more_rows, verdict.look) == (NOT_ENOUGH, expected, NO_TEST), verdict.message
    assert f"{positives} of the rarer class" in verdict.message


def _split(scenario: Scenario, rows: int, rng: np.random.Generator, share: float = 0.5):
    """A split: each row answered by one version only (the challenger's share of the rows), labels known."""
    y, a, b = draw(scenario, rows, rng)
    on_challenger = rng.random(rows) < share
    return y[~on_challenger], a[~on_challenger], y[on_challenger], b[on_challenger]


def test_the_split_test_adds_each_versions_own_delong_variance():
    ya, a, yb, b = _split(Scenario(prevalence=0.3), 800, np.random.default_rng(6))
    a = np.round(a, 2)  # ties, counted half
    difference, variance = delong_independent(ya, a, yb, b)
    assert difference == pytest.approx(roc_auc(yb, b) - roc_auc(ya, a), abs=1e-12)

    def own_variance(y, scores):  # every positive against every negative of the same version's rows
        pos, neg = scores[y == 1][:, None], scores[y == 0][None, :]
        wins = (pos > neg) + 0.5 * (pos == neg)
        return np.var(wins.mean(axis=1), ddof=1) / wins.shape[0] + np.var(wins.mean(axis=0), ddof=1) / wins.shape[1]

    assert variance == pytest.approx(own_variance(ya, a) + own_variance(yb, b), rel=1e-9)
    rng = np.random.default_rng(8)  # its variance is the spread of the difference over independent splits
    measured = [
        delong_independent(*_split(Scenario(challenger_auc=0.75, prevalence=0.1), 1200, rng)) for _ in range(300)
    ]
    differences, variances = np.array(measured).T
    assert np.std(differences, ddof=1) == pytest.approx(np.sqrt(variances.mean()), rel=0.12)


def test_a_split_is_judged_on_each_versions_own_labelled_requests(tmp_path):
    """No request was scored by both (a split): the verdict is DeLong's test for independent samples, said so."""
    logs, rng = tmp_path / "predictions", np.random.default_rng(9)
    ya, a, yb, b = _split(Scenario(challenger_auc=0.9), 3000, rng)
    _score(logs, "blue", "3", {f"a{i}": [round(float(p), 6)] for i, p in enumerate(a)}, 0.01)
    _score(logs, "green", "4", {f"b{i}": [round(float(p), 6)] for i, p in enumerate(b)}, 0.01)
    labels = [{"request_id": f"a{i}", "label": int(v)} for i, v in enumerate(ya)]
    labels += [{"request_id": f"b{i}", "label": int(v)} for i, v in enumerate(yb)]
    now = time.time()
    FeedbackLog(logs / "blue.jsonl", 1 << 30, 2).append(parse_body(json.dumps({"labels": labels}).encode(), now), now)

    pairs = read_pairs(logs, "3", "4", read_labels(logs, None), 0, now + 1)
    assert len(pairs.labels) == 0 and len(pairs.own_labelled["3"][0]) == len(ya)
    result = compare(pairs, read_window(logs, 0, now + 1, max_sampled=1), "3", "4", (0.5, 0.5), RULE)
    f = result.figures
    assert f["design"] == "split" and f["labelled_rows"] == 3000
    assert f["champion_roc_auc"] == round(roc_auc(ya, a), 4) and f["challenger_roc_auc"] == round(roc_auc(yb, b), 4)
    assert result.verdict.verdict == BETTER and "independent samples (a split)" in result.verdict.message


def test_a_split_s_requests_the_challenger_answered_late_are_the_champion_s_and_keep_the_design(tmp_path):
    """A split logs a few requests under both versions: the challenger answered after the live color stopped
    waiting, and the champion answered the client. The experiment recorded a split: those are the champion's rows
    (before, five such requests made it a paired design of five rows: not enough data, however many the split had)."""
    logs, rng = tmp_path / "predictions", np.random.default_rng(9)
    ya, a, yb, b = _split(Scenario(challenger_auc=0.9), 3000, rng)
    late = {f"late{i}": [0.1 * i] for i in range(5)}
    _score(logs, "blue", "3", {f"a{i}": [round(float(p), 6)] for i, p in enumerate(a)} | late, 0.01)
    _score(logs, "green", "4", {f"b{i}": [round(float(p), 6)] for i, p in enumerate(b)} | late, 0.01)
    labels = [{"request_id": f"a{i}", "label": int(v)} for i, v in enumerate(ya)]
    labels += [{"request_id": f"b{i}", "label": int(v)} for i, v in enumerate(yb)]
    labels += [{"request_id": f"late{i}", "label": i % 2} for i in range(5)]
    now = time.time()
    FeedbackLog(logs / "blue.jsonl", 1 << 30, 2).append(parse_body(json.dumps({"labels": labels}).encode(), now), now)

    pairs = read_pairs(logs, "3", "4", read_labels(logs, None), 0, now + 1)
    assert len(pairs.labels) == 5
    result = compare(pairs, read_window(logs, 0, now + 1, max_sampled=1), "3", "4", (0.5, 0.5), RULE, design=SPLIT)
    f = result.figures
    assert f["design"] == "split" and f["labelled_rows"] == 3005 and f["champion_labelled"] == len(ya) + 5
    champion_auc = roc_auc(
        np.concatenate([ya, [i % 2 for i in range(5)]]), np.concatenate([a, [0.1 * i for i in range(5)]])
    )
    assert f["champion_roc_auc"] == round(champion_auc, 4) and f["challenger_roc_auc"] == round(roc_auc(yb, b), 4)
    assert result.verdict.verdict == BETTER and "independent samples (a split)" in result.verdict.message
    assert f["probability_psi_on"] == "each version's own decisions"


def test_a_shadow_whose_inputs_are_sampled_stays_paired_on_the_requests_both_logged(tmp_path):
    """Each color samples the inputs it logs on its own: at a rate of 0.4 only 16% of a shadow's requests are logged
    by both, and most of the challenger's logged decisions have no pair. The experiment recorded a shadow: it is
    judged on the pairs, never as two independent samples (which a guess from the counts made of it)."""
    logs, rng = tmp_path / "predictions", np.random.default_rng(12)
    y, a, b = draw(Scenario(challenger_auc=0.9), 6000, rng)
    kept_a, kept_b = rng.random(6000) < 0.4, rng.random(6000) < 0.4
    _score(logs, "blue", "3", {f"r{i}": [round(float(a[i]), 6)] for i in np.flatnonzero(kept_a)}, 0.01)
    _score(logs, "green", "4", {f"r{i}": [round(float(b[i]), 6)] for i in np.flatnonzero(kept_b)}, 0.01)
    now = time.time()
    labels = [{"request_id": f"r{i}", "label": int(v)} for i, v in enumerate(y)]
    FeedbackLog(logs / "blue.jsonl", 1 << 30, 2).append(parse_body(json.dumps({"labels": labels}).encode(), now), now)

    pairs = read_pairs(logs, "3", "4", read_labels(logs, None), 0, now + 1)
    both = kept_a & kept_b
    assert len(pairs.labels) == both.sum() < (kept_b & ~kept_a).sum()  # most of its decisions have no pair
    result = compare(pairs, read_window(logs, 0, now + 1, max_sampled=1), "3", "4", (0.5, 0.5), RULE, design=PAIRED)
    assert result.figures["design"] == "paired" and result.figures["labelled_pairs"] == both.sum()
    assert result.figures["probability_psi_on"] == "paired decisions"


def test_a_class_not_seen_yet_asks_for_at_least_its_minimum_of_rows():
    ya, a, _, _ = _split(Scenario(prevalence=0.3), 600, np.random.default_rng(13), share=0.0)
    verdict = judge_split(ya, a, np.empty(0), np.empty(0), RULE)  # the challenger's labels are not in yet
    assert (verdict.verdict, verdict.look) == (NOT_ENOUGH, NO_TEST) and verdict.more_rows == RULE.min_class_rows


def test_on_simulated_splits_an_equal_challenger_is_rarely_declared_better_at_one_final_look():
    rng, better = np.random.default_rng(10), 0
    for _ in range(300):
        ya, a, yb, b = _split(Scenario(challenger_auc=0.75), 4000, rng)
        verdict = judge_split(ya, a, yb, b, replace(RULE, min_gain=0.1))
        better += verdict.verdict == BETTER
    assert better / 300 <= 0.05  # one-sided: 2.5% expected
