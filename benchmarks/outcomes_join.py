"""Outcomes: time and peak memory of joining N logged predictions with N labels and judging them; and the
label-free estimate's error against the realized figures on a replay.

    .venv/bin/python benchmarks/outcomes_join.py [N ...]     (default: 1000000)
    .venv/bin/python benchmarks/outcomes_join.py --replay

The join: the prediction log written by the service's own writer (fin_behavior/serving/prediction_log.py), every
request sampled (the default), single-row bodies of real records, answers carrying their request ids and lines
naming the client whose key asked (as the service writes them), 2 versions on 2 colors; N labels written by the
feedback log's own writer (fin_behavior/serving/feedback.py), posted with the same client's key (each label joins
only that key's decisions), 1 in 1,000 for an id never scored. Then, in a fresh interpreter,
`realized.evaluate`: read the labels, one pass over the log joining them, each version judged (the time includes
the interpreter and its imports).

The replay: a forest trained by the platform's own training code on generated data scores its hold-out; the first
half of the hold-out is labelled (it fits the calibration map), the second half is not: the estimate for the second
half, calibrated and raw, against what its labels say.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _measure import run_measured

EVALUATE = """
import time
from pathlib import Path
from fin_behavior.monitoring.realized import evaluate
from fin_behavior.settings import get_settings
started, cpu = time.perf_counter(), time.process_time()
window = evaluate(get_settings(), Path({logs!r}), None, lambda v: (0.2, {{"roc_auc": 0.8, "recall": 0.5}}), now={now!r})
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
c = window.label_counts
labelled = {{v: r.figures["labelled"] for v, r in window.results.items()}}
print(c["matched"], c["unknown"], round(seconds, 2), round(cpu, 2), labelled)
"""


def write_logs(directory: Path, requests: int) -> tuple[Path, float]:
    import numpy as np

    from fin_behavior.data.columns import FEATURES
    from fin_behavior.data.generate import generate_csv
    from fin_behavior.data.processing import process_raw_file
    from fin_behavior.serving.feedback import FeedbackLog
    from fin_behavior.serving.prediction_log import PredictionLog, client_id

    dataset = process_raw_file(generate_csv(directory / "raw.csv", rows=20_000, seed=3), 0.95).dataset
    rows = [json.dumps(r).encode() for r in json.loads(dataset[list(FEATURES)].to_json(orient="records"))]
    logs = directory / "predictions"
    writers = [
        PredictionLog(logs / f"{color}.jsonl", version, 1.0, 1 << 40, 8)
        for color, version in (("blue", "3"), ("green", "4"))
    ]
    rng = np.random.default_rng(0)
    probabilities = np.round(rng.beta(1, 12, requests), 6)
    outcomes = (rng.random(requests) < probabilities).astype(int)
    feedback = FeedbackLog(logs / "blue.jsonl", 1 << 40, 8)
    client = client_id(b"the bank's scoring key")
    labels = []
    for i in range(requests):
        request_id = f"{i:032x}"  # as long as the service's own ids
        p, version = probabilities[i], (b"3", b"4")[i % 2]
        response = b'{"predictions":[%d],"probabilities":[%s],"model_version":"%s","request_id":"%s"}' % (
            p >= 0.2,
            repr(float(p)).encode(),
            version,
            request_id.encode(),
        )
        writers[i % 2].write(0.0009, 200, 1, rows[i % len(rows)], {}, response, request_id, client=client)
        labels.append(
            {
                "request_id": request_id if i % 1000 else f"unknown{i}",
                "row": 0,
                "label": int(outcomes[i]),
                "observed_at": 0,
            }
        )
        if i % 10_000 == 9_999:
            for writer in writers:
                writer.flush()
            feedback.append(labels, time.time(), client)
            labels = []
    for writer in writers:
        writer.close()
    if labels:
        feedback.append(labels, time.time(), client)
    return logs, time.time() + 1


def join_benchmark(sizes: list[int]) -> None:
    print("| predictions | labels | log MiB | labels MiB | join and judge s (fresh interpreter) | of which evaluate s "
          "| evaluate CPU s | peak RSS MiB | load average |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for requests in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            logs, now = write_logs(Path(tmp), requests)
            size = sum(p.stat().st_size for p in logs.glob("*.jsonl")) / (1 << 20)
            labels = sum(p.stat().st_size for p in (logs / "feedback").glob("*.jsonl")) / (1 << 20)
            seconds, peak, out = run_measured(EVALUATE.format(logs=str(logs), now=now))
            matched, unknown, inner, cpu, _ = out.split(maxsplit=4)
            assert int(matched) + int(unknown) == requests and int(unknown) == requests // 1000, out
            print(
                f"| {requests:,} | {requests:,} | {size:,.0f} | {labels:,.0f} | {seconds:.1f} | {inner} | {cpu} "
                f"| {peak:,.0f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


def replay() -> None:
    import numpy as np

    from fin_behavior.data.columns import FEATURES, KEY, TARGET
    from fin_behavior.data.generate import generate_csv
    from fin_behavior.data.processing import process_raw_file
    from fin_behavior.ml.options import TrainingOptions
    from fin_behavior.ml.train import train
    from fin_behavior.monitoring.realized import calibrator, estimate, measure
    from fin_behavior.settings import get_settings

    print("| seed | hold-out rows (labelled / pending) | ROC-AUC realized | estimated (calibrated / raw) "
          "| precision realized | estimated (calibrated / raw) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for seed in (1, 2, 3):
        with tempfile.TemporaryDirectory() as tmp:
            data = process_raw_file(generate_csv(Path(tmp) / "raw.csv", rows=20_000, seed=seed), 0.95).dataset
        model = train(data, TrainingOptions.from_settings(get_settings().with_overrides(n_iter=4, random_state=seed)))
        holdout = data[data[KEY].isin(set(model.split.test_ids))]
        p = model.pipeline.predict_proba(holdout[list(FEATURES)])[:, 1]
        y = holdout[TARGET].to_numpy().astype(float)
        half = len(p) // 2
        threshold = model.search.decision_threshold
        fitted = calibrator(y[:half], p[:half])
        realized = measure(y[half:], p[half:], threshold)
        calibrated, raw = estimate(p[half:], threshold, fitted), estimate(p[half:], threshold, None)
        print(
            f"| {seed} | {half} / {len(p) - half} | {realized['roc_auc']:.3f} | {calibrated['roc_auc']:.3f} / "
            f"{raw['roc_auc']:.3f} | {realized['precision']:.3f} | {calibrated['precision']:.3f} / "
            f"{raw['precision']:.3f} |",
            flush=True,
        )
        assert np.isfinite(calibrated["roc_auc"])


if __name__ == "__main__":
    if sys.argv[1:] == ["--replay"]:
        replay()
    else:
        join_benchmark([int(a) for a in sys.argv[1:]] or [1_000_000])
