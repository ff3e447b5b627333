"""Fairness evidence and the model risk report: how long each takes.

.venv/bin/python benchmarks/governance.py fairness [RUNS]   (default 5) trains once on the default data with the
    default settings, then times the fairness evaluation (fairlearn figures + 1,000 bootstrap resamples per group)
    RUNS times on its hold-out; prints the gates' verdicts and the point estimates too.
.venv/bin/python benchmarks/governance.py report [VERSION] [RUNS]   (default 1, 3) after `make demo`: times
    `fin-behavior report VERSION` as a user runs it (a fresh process: imports included), RUNS times.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def fairness(runs: int) -> None:
    from fin_behavior.data.generate import generate_csv
    from fin_behavior.data.processing import process_raw_file
    from fin_behavior.ml.fairness import assess_fairness, gate
    from fin_behavior.ml.options import TrainingOptions
    from fin_behavior.ml.train import train
    from fin_behavior.settings import get_settings

    settings = get_settings()
    with tempfile.TemporaryDirectory() as tmp:
        raw = generate_csv(Path(tmp) / "t.csv", rows=settings.default_rows, seed=settings.default_seed)
        dataset = process_raw_file(raw, settings.target_quantile).dataset
    model = train(dataset, TrainingOptions.from_settings(settings))
    threshold = model.search.decision_threshold
    proba = model.pipeline.predict_proba(model.split.x_test)[:, 1]
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        record = assess_fairness(model.split.x_test, model.split.y_test, proba, threshold, settings)
        timings.append(time.perf_counter() - started)
    print(f"fairness on {record.rows} hold-out rows, {record.bootstrap_samples} resamples per group: median "
          f"{statistics.median(timings):.2f} s, max {max(timings):.2f} s over {runs} runs")  # fmt: skip
    for name in ("selection_rate_ratio", "equalized_odds_difference"):
        outcome = gate(record, name)
        print(f"{name}: {'passed' if outcome.passed else 'FAILED'} (actual {outcome.actual}, {outcome.threshold})")
    for attribute in record.attributes:
        for name in ("selection_rate_ratio", "equalized_odds_difference"):
            c = getattr(attribute, name)
            if c is not None:
                print(f"  {attribute.attribute} {name}: {c.interval.text()} ({c.low_group} vs {c.high_group}, "
                      f"{'established' if c.established else 'not established'})")  # fmt: skip


def report(version: str, runs: int) -> None:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([".venv/bin/fin-behavior", "report", version], capture_output=True, text=True)
        timings.append(time.perf_counter() - started)
        if out.returncode != 0:
            sys.exit(out.stderr)
    size = Path(out.stdout.strip()).stat().st_size / 1024
    started = time.perf_counter()
    from mlflow import MlflowClient

    from fin_behavior.governance.report import publish_report
    from fin_behavior.settings import get_settings

    imports = time.perf_counter() - started
    settings = get_settings()
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    inside = []
    for _ in range(runs):
        started = time.perf_counter()
        publish_report(client, settings, settings.registered_model_name, version, attach=False)
        inside.append(time.perf_counter() - started)
    print(f"in process: importing MLflow and the report {imports:.2f} s, then the report itself median "
          f"{statistics.median(inside):.2f} s, max {max(inside):.2f} s")  # fmt: skip
    print(f"fin-behavior report {version}: median {statistics.median(timings):.2f} s, max {max(timings):.2f} s over "
          f"{runs} runs (fresh process each); HTML {size:.0f} KiB: {out.stdout.strip()}")  # fmt: skip


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "fairness"
    if what == "fairness":
        fairness(int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    else:
        report(sys.argv[2] if len(sys.argv) > 2 else "1", int(sys.argv[3]) if len(sys.argv) > 3 else 3)
