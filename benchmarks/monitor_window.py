"""Time and peak memory of one monitoring pass over a window of N logged requests.

    .venv/bin/python benchmarks/monitor_window.py [N ...]     (default: 100000 1000000)

The log is written by the service's own writer (fin_behavior/serving/prediction_log.py), every request sampled
(the default), single-row bodies of real records as a client sends them, across 2 versions and 2 colors, and
rotation off so the whole window stays on disk. Then, in a fresh interpreter, the monitor's evaluation: read
the window, judge each version against a reference profile (the time includes the interpreter and its imports).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from _measure import run_measured

EVALUATE = """
import time
from pathlib import Path
from fin_behavior.monitoring.evaluate import evaluate
from fin_behavior.monitoring.profile import read_profile
from fin_behavior.settings import get_settings
started = time.perf_counter()
profile = read_profile(Path({profile!r}))
window, qualities = evaluate(get_settings(), Path({logs!r}), lambda _: profile, now={now!r})
seconds = time.perf_counter() - started
drifted = {{v: q.checks["input_drift"].outcome.passed for v, q in qualities.items()}}
print(window.lines, window.files, round(seconds, 2), drifted)
"""


def write_log(directory: Path, requests: int) -> tuple[Path, float]:
    from fin_behavior.data.columns import FEATURES
    from fin_behavior.data.generate import generate_csv
    from fin_behavior.data.processing import process_raw_file
    from fin_behavior.monitoring.profile import build_profile, write_profile
    from fin_behavior.serving.prediction_log import PredictionLog

    dataset = process_raw_file(generate_csv(directory / "raw.csv", rows=20_000, seed=3), 0.95).dataset
    rows = json.loads(dataset[list(FEATURES)].to_json(orient="records"))
    write_profile(build_profile(dataset[list(FEATURES)].iloc[:10_000], [i / 1000 for i in range(1000)]), directory)
    logs = directory / "predictions"
    writers = [
        PredictionLog(logs / f"{color}.jsonl", version, 1.0, 1 << 40, 8)
        for color, version in (("blue", "3"), ("green", "4"))
    ]
    response = b'{"predictions":[0],"probabilities":[0.031442],"model_version":"3"}'
    for i in range(requests):
        body = json.dumps(rows[i % len(rows)]).encode()
        writers[i % 2].write(0.0009, 200 if i % 97 else 422, 1, body, {}, response)
        if i % 10_000 == 0:
            for writer in writers:
                writer.flush()
    for writer in writers:
        writer.close()
    return logs, time.time() + 1


def main(sizes: list[int]) -> None:
    print(
        "| requests in the window | log MiB | evaluation s (fresh interpreter) | of which the pass s | peak RSS MiB |"
    )
    print("|---:|---:|---:|---:|---:|")
    for requests in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            logs, now = write_log(Path(tmp), requests)
            size = sum(p.stat().st_size for p in logs.glob("*.jsonl")) / (1 << 20)
            seconds, peak, out = run_measured(EVALUATE.format(profile=tmp, logs=str(logs), now=now))
            lines, _files, inner, _ = out.split(maxsplit=3)
            assert int(lines) == requests, out
            print(f"| {requests:,} | {size:,.0f} | {seconds:.1f} | {inner} | {peak:,.0f} |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100_000, 1_000_000])
