"""Explanations against scoring, side by side in one run: `/score` single-row throughput and latency of the
scoring service with explanations off (`--explain-workers 0`, the service as it was), on but idle, on while a
client keeps asking for explanations, and off once more (equal runs: the machine's noise); then the latency of
one explanation (`POST /explain`, one row, the default model), sequentially, and the same through
`GET /explain/{request_id}` (the logged decision read back).

Both services are pinned to CPU 0 (their explanation worker processes inherit it), autocannon to CPU 1, 16
connections, as in benchmarks/serving.py. The model is the project's training with the search capped for time
(5 candidates x 3 folds), as there.

    make bench-tools                                  # once: npm ci in benchmarks/
    .venv/bin/python benchmarks/explain.py [--seconds 10] [--repeat 3] [--explanations 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from serving import AUTOCANNON, SERVER_CPU, autocannon, build_model, median_run, wait_http

from fin_behavior.deploy.local import free_port

KEY = "k" * 32


def start(env, bundle: Path, work: Path, name: str, *extra: str) -> tuple[subprocess.Popen, str]:
    keys = work / "keys.json"
    keys.write_text(json.dumps({"keys": [KEY]}))
    port = free_port()
    argv = [str(env.python), "-I", "-m", "fin_behavior.serving.app", "--bundle", str(bundle), "--keys-file",
            str(keys), "--model-version", "1", "--port", str(port), "--prediction-log", str(work / f"{name}.jsonl"),
            *extra]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/ready")
    return process, url


def explain_traffic(url: str, record: dict, stop: threading.Event, answers: list[int]) -> None:
    """One client asking for single-row explanations back to back (a reviewer's screen, busy)."""
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as client:
        while not stop.is_set():
            answers.append(client.post("/explain", json=record).status_code)


def measure(url: str, records: list[dict], headers: dict, seconds: int, explained: list[int], busy: bool) -> dict:
    """One autocannon run on /score; with `busy`, one client asks for explanations all the while."""
    stop = threading.Event()
    client = threading.Thread(target=explain_traffic, args=(url, records[1], stop, explained))
    if busy:
        client.start()
    try:
        return autocannon(f"{url}/score", records[0], headers, seconds)
    finally:
        stop.set()
        if busy:
            client.join()


def latencies(url: str, records: list[dict]) -> dict:
    """Per-row explanation latency, ms, through POST /explain and through GET /explain/{id}."""
    posted, logged = [], []
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as client:
        assert client.post("/explain", json=records[0]).status_code == 200  # the worker started, shap loaded
        for i, record in enumerate(records):
            started = time.perf_counter()
            assert client.post("/explain", json=record).status_code == 200
            posted.append((time.perf_counter() - started) * 1e3)
            client.post("/score", json=record, headers={"X-Request-ID": f"bench-{i}"})
        time.sleep(0.6)  # the log is flushed every 0.5 s
        for i in range(len(records)):
            started = time.perf_counter()
            answer = client.get(f"/explain/bench-{i}")
            assert answer.status_code == 200, answer.text
            logged.append((time.perf_counter() - started) * 1e3)
    figures = {}
    for name, values in (("post_one_row", posted), ("get_logged_one_row", logged)):
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        figures[name] = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "p99_ms": round(p99, 2), "n": len(values)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--explanations", type=int, default=200, help="rows explained one by one for the latency")
    args = parser.parse_args()
    if not AUTOCANNON.exists():
        sys.exit("autocannon is not installed: run `make bench-tools` first")
    from fin_behavior.records import read_json

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pipeline, bundles, _ = build_model(work, ("local",))
        env, bundle = bundles["local"]
        forest = pipeline[-1]
        depth = max(t.tree_.max_depth for t in forest.estimators_)
        records = read_json(bundle / "expected.json")["records"]
        width = pipeline[:-1].transform(pd.DataFrame(records[:1])).shape[1]
        print(f"model: {forest.n_estimators} trees, max depth {depth}, {width} encoded features")
        os.sched_setaffinity(0, {SERVER_CPU})  # the services (and their workers) inherit CPU 0
        off, off_url = start(env, bundle, work, "off", "--explain-workers", "0")
        on, on_url = start(env, bundle, work, "on")
        headers = {"X-API-Key": KEY}
        runs: dict[str, list[dict]] = {
            "explanations off": [],
            "explanations on, idle": [],
            "on, 1 client explaining": [],
            "explanations off, again": [],  # the first service once more: how far apart equal runs land
        }
        explained: list[int] = []
        try:
            httpx.post(f"{on_url}/explain", json=records[0], headers=headers, timeout=120)  # worker started
            plan = [(name, off_url if "off" in name else on_url) for name in runs]
            for round_ in range(args.repeat):  # interleaved, the order rotating, so the machine's drift falls alike
                for name, url in plan[round_ % len(plan) :] + plan[: round_ % len(plan)]:
                    runs[name].append(measure(url, records, headers, args.seconds, explained, "explaining" in name))
            latency = latencies(on_url, records[: args.explanations])
        finally:
            for process in (off, on):
                process.terminate()
                process.wait(10)
    print(f"\n/score, 1 row, 16 connections, median of {args.repeat} x {args.seconds} s:")
    print(f"{'service':28} {'req/s':>8} {'range':>17} {'p50 ms':>7} {'p97.5 ms':>9} {'errors':>6}")
    for name, measured in runs.items():
        m = median_run(measured)
        low, high = m["req_per_s_range"]
        print(f"{name:28} {m['req_per_s']:8.0f} {f'{low:.0f}-{high:.0f}':>17} {m['p50_ms']:7.2f} "
              f"{m['p97_5_ms']:9.2f} {m['errors']:6d}")  # fmt: skip
    print(f"(explanations answered during the third measurement: {len(explained)}, statuses {sorted(set(explained))})")
    print("\nexplanation latency, one row at a time, client side:")
    for name, figures in latency.items():
        p50, p95, p99, n = (figures[k] for k in ("p50_ms", "p95_ms", "p99_ms", "n"))
        print(f"{name:20} p50 {p50:.2f} ms  p95 {p95:.2f} ms  p99 {p99:.2f} ms  (n={n})")


if __name__ == "__main__":
    main()
