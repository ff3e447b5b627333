"""The live endpoint's latency with and without a 100% shadow, side by side in one run, and the clients' failures
while the shadow is killed with SIGKILL.

The real local endpoint (supervisor, colors, the rollout's gates): v1 live on blue, "v2" (the same bundle under
another version) on green as its shadow, getting a copy of every client request after the live answer
(serving/traffic.py). Load is open-loop at a fixed rate (each request's latency counts from the moment it was due,
so a stall is not hidden by the client waiting), single-row bodies with a client key (the platform's probe
requests are never copied). The rounds alternate "no shadow" and "100% shadow", so the host's drift hits both.
CPU pinning: the live color on CPU 0; the shadow color and this load generator on CPU 1 (they share it: what the
shadow costs the machine shows up on the client side, not hidden).

    .venv/bin/python benchmarks/shadow.py [--rate 500] [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _bundle import local_bundle

LIVE_CPU, SHADOW_CPU = 0, 1


async def _load(url: str, key: str, body: bytes, rate: float, seconds: float, kill_at: float | None = None,
                kill=None) -> dict:  # fmt: skip
    """Open-loop: request i is due at start + i / rate; its latency counts from then."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10, limits=limits) as client:

        async def one(due: float) -> None:
            try:
                response = await client.post("/score", content=body)
                outcome = None if response.status_code == 200 else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            if outcome is None:
                latencies.append(time.perf_counter() - due)
            else:
                failures[outcome] = failures.get(outcome, 0) + 1

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            due = start + i / rate
            if kill is not None and kill_at is not None and due - start >= kill_at:
                kill()
                kill = None
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
    ms = np.asarray(latencies) * 1e3
    return {
        "requests": len(tasks),
        "ok": len(latencies),
        "failures": failures,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _copied(target, version: str = "2") -> dict[str, float]:
    text = httpx.get(f"{target.url}/metrics", headers={"X-API-Key": target.key()}).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("fin_behavior_challenger_requests_total{") and f'version="{version}"' in line:
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500, help="requests per second, open loop (default 500)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from fin_behavior.deploy.deployer import load_release
    from fin_behavior.deploy.local import LocalTarget, free_port
    from fin_behavior.deploy.rollout import GateSettings, rollout
    from fin_behavior.records import read_json
    from fin_behavior.settings import get_settings

    os.sched_setaffinity(0, {SHADOW_CPU})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle, _ = local_bundle(work)
        body = json.dumps(read_json(bundle / "expected.json")["records"][:1]).encode()
        settings = get_settings().with_overrides(endpoint_port=free_port(), drain_seconds=1.0)
        target = LocalTarget(work / "endpoint", settings.envs_dir or settings.var_dir / "envs", settings)
        results: dict[str, list[dict]] = {"no shadow": [], "100% shadow": []}
        try:
            live = rollout(target, load_release("bench", "1", bundle), GateSettings.from_settings(settings),
                           log=lambda _: None).new  # fmt: skip
            shadow = target.start(load_release("bench", "2", bundle), "green")
            os.sched_setaffinity(live.detail["pid"], {LIVE_CPU})
            os.sched_setaffinity(shadow.detail["pid"], {SHADOW_CPU})
            key = target.key()
            asyncio.run(_load(target.url, key, body, args.rate, 3))  # warm-up
            for _ in range(args.rounds):
                for name in results:
                    if name == "100% shadow":
                        target.challenge(shadow, "shadow", 1.0, settings.challenger_timeout_seconds)
                    cpu = _cpu_seconds(live.detail["pid"])
                    run = asyncio.run(_load(target.url, key, body, args.rate, args.seconds))
                    run["live_cpu_ms_per_request"] = (_cpu_seconds(live.detail["pid"]) - cpu) * 1e3 / run["requests"]
                    results[name].append(run)
                    if name == "100% shadow":
                        target._command("unchallenge")
            copies = _copied(target)
            target.challenge(shadow, "shadow", 1.0, settings.challenger_timeout_seconds)
            before = _copied(target)

            def kill() -> None:
                os.kill(shadow.detail["pid"], signal.SIGKILL)

            killed = asyncio.run(_load(target.url, key, body, args.rate, args.seconds, args.seconds / 2, kill))
            after = _copied(target)
            events = [e["message"] for e in target.state()["events"][-3:]]
        finally:
            target.stop_all()

    print(f"open loop at {args.rate:g} req/s, {args.rounds} rounds of {args.seconds:g} s each, single-row bodies; "
          f"live color on CPU {LIVE_CPU}, shadow and load generator on CPU {SHADOW_CPU}\n")  # fmt: skip
    print("| live endpoint | requests | failed | p50 ms (median of rounds) | p95 ms (median) | p95 ms per round "
          "| p99 ms | live color's CPU ms per request |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for name, runs in results.items():
        p95s = [r["p95_ms"] for r in runs]
        print(
            f"| {name} | {sum(r['requests'] for r in runs):,} | {sum(sum(r['failures'].values()) for r in runs)} | "
            f"{statistics.median(r['p50_ms'] for r in runs):.2f} | {statistics.median(p95s):.2f} | "
            f"{', '.join(f'{p:.2f}' for p in p95s)} | {statistics.median(r['p99_ms'] for r in runs):.2f} | "
            f"{statistics.median(r['live_cpu_ms_per_request'] for r in runs):.3f} |"
        )
    ratio = statistics.median(r["p95_ms"] for r in results["100% shadow"]) / statistics.median(
        r["p95_ms"] for r in results["no shadow"]
    )
    print(f"\np95 with a 100% shadow / without: {ratio:.3f}; the shadow's copies over all rounds: {copies}")
    print(
        f"\nSIGKILL of the shadow at {args.seconds / 2:g} s of a {args.seconds:g} s run: {killed['requests']:,} "
        f"requests, failed {sum(killed['failures'].values())} {killed['failures'] or ''}, "
        f"p95 {killed['p95_ms']:.2f} ms; "
        f"copies during the run: { {k: after.get(k, 0) - before.get(k, 0) for k in after} }; supervisor: {events}"
    )


if __name__ == "__main__":
    main()
