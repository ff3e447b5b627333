"""The trained_model gates on the default data for several seeds, and on a file without signal.

    .venv/bin/python benchmarks/gates_by_seed.py [SEED ...]     (default: 1 3 7 11 42)

Runs the stage's domain code with the default settings (20 candidates x 3 folds) and `random_state` = SEED on
the embedded 5,000 rows (data seed 42), then once on the same rows with the amount shuffled (the public Kaggle
export's situation: no feature carries signal). Prints the decision threshold, the hold-out figures and each
gate's verdict; the same figures at the fixed 0.5 cut-off show what the chosen threshold changes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

from fin_behavior.data.generate import generate_csv
from fin_behavior.data.processing import process_raw_file
from fin_behavior.ml import gates
from fin_behavior.ml.evaluate import holdout_metrics, single_row_latency_ms
from fin_behavior.ml.train import TrainingOptions, train
from fin_behavior.settings import get_settings


def judge(dataset: pd.DataFrame, seed: int, label: str) -> None:
    settings = get_settings().with_overrides(random_state=seed)
    model = train(dataset, TrainingOptions.from_settings(settings))
    proba = model.pipeline.predict_proba(model.split.x_test)[:, 1]
    threshold = model.search.decision_threshold
    at_half = holdout_metrics(model.split.y_test, proba, 0.5)
    metrics = holdout_metrics(model.split.y_test, proba, threshold)
    latency = single_row_latency_ms(model.pipeline.predict_proba, model.split.x_test)
    evidence = gates.judge("bench", metrics, latency, settings)
    verdicts = ", ".join(f"{v.check} {'pass' if v.passed else 'FAIL'}" for v in evidence.verdicts)
    print(
        f"| {label} | {seed} | {model.search.best_params['class_weight']} | {threshold:.3f} | {metrics['roc_auc']:.3f} "
        f"| {metrics['accuracy']:.3f} | {metrics['balanced_accuracy']:.3f} | {at_half['accuracy']:.3f} | "
        f"{at_half['balanced_accuracy']:.3f} | {verdicts} |",
        flush=True,
    )


def main(seeds: list[int]) -> None:
    print("| data | random_state | class_weight | threshold | ROC-AUC | accuracy | balanced acc. | accuracy @0.5 | "
          "balanced acc. @0.5 | gates |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        dataset = process_raw_file(generate_csv(Path(tmp) / "t.csv", rows=5_000, seed=42), 0.95).dataset
        for seed in seeds:
            judge(dataset, seed, "default")
        raw = pd.read_csv(Path(tmp) / "t.csv", dtype=str)
        raw["Transaction Amount"] = raw["Transaction Amount"].sample(frac=1, random_state=0).to_numpy()
        raw.to_csv(Path(tmp) / "noise.csv", index=False)
        judge(process_raw_file(Path(tmp) / "noise.csv", 0.95).dataset, 42, "amount shuffled")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 3, 7, 11, 42])
