"""/score single-row throughput with the bank's raw record vs the feature-shaped record, side by side: the scoring
service (the real app, in the local serving environment, the bundle built with the raw twins) pinned to CPU 0,
one keep-alive client sending one request at a time pinned to CPU 1 (so req/s = 1 / service time + client), the
two shapes alternating in rounds. Also the parse alone (validation + derivation, in process, no model), per record.

    .venv/bin/python benchmarks/raw_vs_features.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _run(client: httpx.Client, record: dict, seconds: float) -> dict[str, float]:
    body = json.dumps(record).encode()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        response = client.post("/score", content=body)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    ms = np.asarray(times) * 1e3
    return {
        "req_s": len(times) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


def _parse_us(bundle: Path, record: dict, n: int = 20_000) -> float:
    from fin_behavior.records import ModelInfo
    from fin_behavior.serving.raw_records import RecordSchema

    schema = RecordSchema(ModelInfo.read(bundle).features, refusal="")
    started = time.perf_counter()
    for _ in range(n):
        schema.parse(record, 1)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from _bundle import local_bundle

    from fin_behavior.deploy.local import free_port

    os.sched_setaffinity(0, {1})
    work = Path(tempfile.mkdtemp(prefix="bench-raw-"))
    process = None
    try:
        bundle, python = local_bundle(work / "model")
        expected = json.loads((bundle / "expected.json").read_text())
        shapes = {"feature shape": expected["records"][0], "raw record": expected["raw_records"][0]}
        key, port = secrets.token_urlsafe(16), free_port()
        (work / "keys.json").write_text(json.dumps({"keys": [key]}))
        command = ["taskset", "-c", "0", str(python), "-m", "fin_behavior.serving.app", "--bundle", str(bundle)]
        command += ["--keys-file", str(work / "keys.json"), "--model-version", "1", "--port", str(port)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers={"X-API-Key": key}) as client:
            for _ in range(200):
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            answers = {name: client.post("/score", json=record).json() for name, record in shapes.items()}
            assert answers["raw record"]["probabilities"] == answers["feature shape"]["probabilities"]
            results: dict[str, list[dict[str, float]]] = {name: [] for name in shapes}
            _run(client, shapes["feature shape"], 2.0)  # warm-up
            for _ in range(args.rounds):
                for name, record in shapes.items():
                    results[name].append(_run(client, record, args.seconds))
        print(f"| shape | req/s (median of {args.rounds} x {args.seconds:g} s) | p50 ms | p95 ms | parse alone µs |")
        print("|---|---:|---:|---:|---:|")
        for name, runs in results.items():
            best = sorted(runs, key=lambda r: r["req_s"])[len(runs) // 2]
            parse = _parse_us(bundle, shapes[name])
            print(f"| {name} | {best['req_s']:,.0f} | {best['p50_ms']:.2f} | {best['p95_ms']:.2f} | {parse:.0f} |")
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
