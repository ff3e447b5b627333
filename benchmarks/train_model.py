"""Time and peak memory of processing and training (default search settings) at growing row counts.

    .venv/bin/python benchmarks/train_model.py [ROWS ...]     (default: 5000 50000 500000 1000000)

Each size runs in a fresh interpreter: generate the CSV (not timed), then processed_dataset's domain code
(read, validate, features) and the trained_model's (search on a capped sample, final fit on all training
rows, hold-out evaluation).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from _measure import run_measured

CODE = """
import json, time
from fin_behavior.data.generate import generate_csv
from fin_behavior.data.processing import process_raw_file
from fin_behavior.ml.evaluate import holdout_metrics
from fin_behavior.ml.train import TrainingOptions, train
from fin_behavior.settings import get_settings
generate_csv({csv!r}, rows={rows})
t0 = time.perf_counter()
data = process_raw_file({csv!r}, 0.95).dataset
t1 = time.perf_counter()
model = train(data, TrainingOptions.from_settings(get_settings()))
proba = model.pipeline.predict_proba(model.split.x_test)[:, 1]
threshold = model.search.decision_threshold
t2 = time.perf_counter()
auc = holdout_metrics(model.split.y_test, proba, threshold)["roc_auc"]
print(json.dumps(dict(process=t1 - t0, search=model.search.seconds, fit=model.fit_seconds, total=t2 - t0,
                      roc_auc=auc, params=model.search.best_params)))
"""


def main(sizes: list[int]) -> None:
    print("| rows | process s | search s | final fit s | process+train s | peak RSS MiB | ROC-AUC | best params |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sorted(sizes):
            csv = str(Path(tmp) / f"{rows}.csv")
            _, peak, out = run_measured(CODE.format(csv=csv, rows=rows))
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"| {rows:,} | {r['process']:.1f} | {r['search']:.1f} | {r['fit']:.1f} | {r['total']:.1f} | "
                f"{peak:.0f} | {r['roc_auc']:.3f} | {r['params']} |",
                flush=True,
            )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5_000, 50_000, 500_000, 1_000_000])
