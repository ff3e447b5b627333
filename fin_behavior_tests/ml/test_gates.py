from __future__ import annotations

from fin_behavior.ml import gates

GOOD = {
    "roc_auc": 0.83,
    "accuracy": 0.86,
    "balanced_accuracy": 0.74,
    "baseline_balanced_accuracy": 0.5,
    "baseline_accuracy": 0.95,
}


def test_roc_auc_gate_says_by_how_much_and_which_setting():
    assert gates.roc_auc_gate(GOOD, 0.75).passed
    outcome = gates.roc_auc_gate(GOOD | {"roc_auc": 0.70}, 0.75)
    assert not outcome.passed and outcome.actual == 0.70 and outcome.threshold == 0.75
    assert "0.0500 below min_roc_auc 0.75" in outcome.message and "FIN_BEHAVIOR_MIN_ROC_AUC" in outcome.message
    assert "guessing" not in outcome.message


def test_roc_auc_gate_explains_data_without_signal():
    outcome = gates.roc_auc_gate(GOOD | {"roc_auc": 0.51}, 0.75)
    assert not outcome.passed and "guessing" in outcome.message and "Kaggle" in outcome.message


def test_accuracy_gate_needs_accuracy_and_skill_over_the_baseline():
    assert gates.accuracy_gate(GOOD, 0.8, 0.05).passed
    # 0.95 accuracy from always answering 0: passes the seeds' bar, fails the baseline margin
    majority = GOOD | {"accuracy": 0.95, "balanced_accuracy": 0.5}
    outcome = gates.accuracy_gate(majority, 0.8, 0.05)
    assert not outcome.passed and "beats the majority baseline 0.5000 by 0.0000" in outcome.message
    low = gates.accuracy_gate(GOOD | {"accuracy": 0.7}, 0.8, 0.05)
    assert (
        not low.passed and "0.1000 below min_accuracy 0.8" in low.message and "FIN_BEHAVIOR_MIN_ACCURACY" in low.message
    )


def test_latency_gate():
    assert gates.latency_gate({"latency_p95_ms": 20.0}, 100).passed
    outcome = gates.latency_gate({"latency_p95_ms": 130.0}, 100)
    assert not outcome.passed and "30.00 ms over max_latency_ms 100" in outcome.message
