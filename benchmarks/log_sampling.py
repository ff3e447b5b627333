"""What logging every request's inputs and answer costs the scoring service: single-row throughput with the
prediction log sampling all scored requests (the default) and with sampling off, side by side in one run.

    make bench-tools                                  # once: npm ci in benchmarks/
    .venv/bin/python benchmarks/log_sampling.py [--seconds 10] [--repeat 3]

The same bundle (the local serving environment, ONNX) served by two processes of the scoring service, both
writing their prediction log, one with --log-sample-rate 1 and one with 0. Each is pinned to CPU 0 and loaded
in turn (rounds interleave them, so the host's drift hits both alike) by autocannon on CPU 1: 16 connections,
one hold-out record per request. Median of the rounds, range in brackets.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from serving import AUTOCANNON, SERVER_CPU, autocannon, build_model, median_run, wait_http

from fin_behavior.deploy.local import free_port
from fin_behavior.records import read_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not AUTOCANNON.exists():
        sys.exit("autocannon is not installed: run `make bench-tools` first")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _, bundles, _ = build_model(work)
        env, bundle = bundles["local"]
        record = read_json(bundle / "expected.json")["records"][0]
        key = secrets.token_urlsafe(24)
        (work / "keys.json").write_text(json.dumps({"keys": [key]}))
        servers, processes = {}, []
        for rate in ("1", "0"):
            port = free_port()
            processes.append(
                subprocess.Popen(
                    [str(env.python), "-m", "fin_behavior.serving.app", "--bundle", str(bundle),
                     "--keys-file", str(work / "keys.json"), "--model-version", "1", "--port", str(port),
                     "--prediction-log", str(work / f"log-{rate}" / "blue.jsonl"), "--log-sample-rate", rate],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}),
                )
            )  # fmt: skip
            servers[f"sampling {'all' if rate == '1' else 'off'}"] = f"http://127.0.0.1:{port}/score"
            wait_http(f"http://127.0.0.1:{port}/health")
        try:
            runs: dict[str, list[dict]] = {name: [] for name in servers}
            for url in servers.values():
                autocannon(url, record, {"X-API-Key": key}, 2)  # warm-up
            for _ in range(args.repeat):
                for name, url in servers.items():
                    runs[name].append(autocannon(url, record, {"X-API-Key": key}, args.seconds))
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
        logged = {rate: sum(p.stat().st_size for p in (work / f"log-{rate}").glob("*.jsonl")) for rate in "10"}
    results = {name: median_run(r) for name, r in runs.items()}
    print(f"median of {args.repeat} runs of {args.seconds} s, 16 connections, 1 row per request\n")
    print("| prediction log | req/s | p50 ms | p97.5 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        low, high = (f"{x:,.0f}" for x in r["req_per_s_range"])
        print(f"| {name} | {r['req_per_s']:,.0f} [{low}-{high}] | {r['p50_ms']} | {r['p97_5_ms']} | {r['p99_ms']} | "
              f"{r['errors']} |")  # fmt: skip
    full, off = results["sampling all"]["req_per_s"], results["sampling off"]["req_per_s"]
    print(f"\nsampling all vs off: {100 * (full - off) / off:+.1f}% throughput; log written: "
          f"{logged['1'] / 2**20:,.0f} MiB vs {logged['0'] / 2**20:,.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
