"""Scoring throughput and latency, side by side in one run: the live endpoint (deployed by the real local
rollout, measured through its public URL and through the color's private port, to show the stable URL adds
no hop), `mlflow models serve` of the same trained pipeline, and the generated Azure ML score.py under Azure's
own inference server (azmlinfsrv, one worker) in the azureml-sklearn-1.5 environment, with the same model
refit there. Every server is pinned to CPU 0, the load generator (autocannon, from
benchmarks/package-lock.json) to CPU 1.

    make bench-tools                                  # once: npm ci in benchmarks/
    .venv/bin/python benchmarks/serving.py [--seconds 10] [--repeat 3] [--json out.json] [--profile]

--profile samples the live endpoint's process with py-spy (a dev dependency) during one more single-row run
and prints the share of samples under each function: where a request's time goes.

autocannon reports p97.5, not p95; p95 <= p97.5, so the p97.5 column is an upper bound for the p95 target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import joblib

from fin_behavior.deploy.local import LocalTarget, free_port

ROOT = Path(__file__).resolve().parent
AUTOCANNON = ROOT / "node_modules" / ".bin" / "autocannon"
SERVER_CPU, LOAD_CPU = 0, 1


def build_model(work: Path, environments: tuple[str, ...] = ("local", "azureml-sklearn-1.5")):
    """A trained pipeline (the project's training, default search capped for time), its verified bundle for
    the local serving environment, and the same model's bundle for Azure ML's `azureml-sklearn-1.5`."""
    from fin_behavior.data.generate import generate_csv
    from fin_behavior.data.processing import process_raw_file
    from fin_behavior.environments import builder, compatible
    from fin_behavior.environments.spec import get_spec
    from fin_behavior.ml.train import TrainingOptions, train
    from fin_behavior.settings import get_settings

    settings = get_settings()
    envs = settings.envs_dir or settings.var_dir / "envs"
    dataset = process_raw_file(generate_csv(work / "raw.csv", rows=5_000, seed=42), 0.95).dataset
    model = train(dataset, TrainingOptions.from_settings(settings.with_overrides(n_iter=5, cv=3)))
    joblib.dump(model.pipeline, work / "trained.joblib")
    from sklearn import __version__

    threshold = model.search.decision_threshold
    inputs = compatible.TrainedInputs(
        work / "trained.joblib", model.search.best_params, 42, __version__, "t", "d", 0, threshold
    )
    bundles = {}
    for name in environments:
        env = builder.build(get_spec(name), envs)
        report = compatible.build_bundle(env, inputs, dataset, model.split.test_ids, work / name)
        bundle = work / name / "bundle"
        compatible.model_info(env, inputs, report, bundle).write(bundle)
        bundles[name] = (env, bundle)
    return model.pipeline, bundles, envs


def start_azure_server(env, bundle: Path, work: Path, port: int) -> subprocess.Popen:
    """The generated score.py under azmlinfsrv, as Azure ML runs it (one worker: one core)."""
    from fin_behavior.deploy import azure

    code = azure.write_scoring_code(work / "azure-code")
    return subprocess.Popen(
        [str(env.path / "bin" / "azmlinfsrv"), "--entry_script", str(code / "score.py"), "--port", str(port)],
        cwd=code,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ
        | {"AZUREML_MODEL_DIR": str(bundle.parent), "FIN_BEHAVIOR_MODEL_VERSION": "1", "WORKER_COUNT": "1"},
    )


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def autocannon(url: str, body: dict, headers: dict[str, str], seconds: int, connections: int = 16) -> dict:
    args = [str(AUTOCANNON), "-j", "-c", str(connections), "-d", str(seconds), "-m", "POST", "-b", json.dumps(body)]
    for name, value in (headers | {"content-type": "application/json"}).items():
        args += ["-H", f"{name}={value}"]
    run = subprocess.run(
        [*args, url],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {LOAD_CPU}),
    )
    result = json.loads(run.stdout)
    return {
        "req_per_s": result["requests"]["average"],
        "p50_ms": result["latency"]["p50"],
        "p97_5_ms": result["latency"]["p97_5"],
        "p99_ms": result["latency"]["p99"],
        "errors": result["errors"] + result["timeouts"] + result["non2xx"],
        "requests": result["requests"]["total"],
    }


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput (its latencies with it), the range of all, and every error."""
    ordered = sorted(runs, key=lambda r: r["req_per_s"])
    return ordered[len(ordered) // 2] | {
        "req_per_s_range": (ordered[0]["req_per_s"], ordered[-1]["req_per_s"]),
        "errors": sum(r["errors"] for r in runs),
        "runs": len(runs),
    }


def profile(pid: int, url: str, body: dict, headers: dict[str, str], top: int = 25) -> None:
    """Inclusive share of py-spy samples per function while autocannon loads the server."""
    import collections
    import re
    import threading

    load = threading.Thread(target=autocannon, args=(url, body, headers, 12))
    load.start()
    time.sleep(2)
    raw = Path(tempfile.mkdtemp()) / "profile.txt"
    subprocess.run(
        [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-d", "8", "-r", "250",
         "--format", "raw", "--nonblocking", "-o", str(raw)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    load.join()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = {re.sub(r"\(.*?(site-packages/|fin_behavior/)(.*?):\d+\)", r"(\2)", f) for f in stack.split(";")}
        total += int(count)
        for frame in frames:
            inclusive[frame] += int(count)
    print(f"\nprofile of the live endpoint under single-row load ({total} samples; inclusive share):\n")
    for frame, count in inclusive.most_common(top):
        print(f"{100 * count / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if not AUTOCANNON.exists():
        sys.exit("autocannon is not installed: run `make bench-tools` first")

    from fin_behavior.deploy.deployer import load_release
    from fin_behavior.deploy.rollout import GateSettings, rollout
    from fin_behavior.records import read_json
    from fin_behavior.settings import get_settings

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pipeline, bundles, envs = build_model(work)
        bundle = bundles["local"][1]
        expected = read_json(bundle / "expected.json")
        one, hundred = expected["records"][:1], expected["records"][:100]

        os.sched_setaffinity(0, {SERVER_CPU})  # servers started from here on inherit CPU 0
        target = LocalTarget(work / "endpoint", envs, port=free_port(), drain_seconds=1)
        mlflow_port = free_port()
        processes: list[subprocess.Popen] = []
        try:
            release = load_release("bench", "1", bundle)
            live = rollout(target, release, GateSettings.from_settings(get_settings()), log=lambda _: None).new
            import mlflow.sklearn

            # our own model, so the pickle format is trusted (MLflow's default skops refuses forests unless told)
            mlflow.sklearn.save_model(
                pipeline, work / "mlflow_model", serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE
            )
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(work / "mlflow_model"),
                     "--env-manager", "local", "-p", str(mlflow_port), "-w", "1"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    # it runs `uvicorn` by name: the project environment's must come first on PATH
                    env=os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
                )
            )  # fmt: skip
            azure_port = free_port()
            processes.append(start_azure_server(*bundles["azureml-sklearn-1.5"], work, azure_port))
            wait_http(f"http://127.0.0.1:{mlflow_port}/ping")
            wait_http(f"http://127.0.0.1:{azure_port}/")
            key = {"X-API-Key": target.probe_key()}  # the platform's own load: kept out of the monitored traffic
            servers = {
                "live endpoint (public URL)": (f"{target.url}/score", lambda rows: rows, key),
                "live endpoint (color's private port)": (
                    f"http://127.0.0.1:{live.detail['port']}/score",
                    lambda rows: rows,
                    key,
                ),
                "mlflow models serve": (
                    f"http://127.0.0.1:{mlflow_port}/invocations",
                    lambda rows: {"dataframe_records": rows},
                    {},
                ),
                "Azure ML inference server + score.py (scikit-learn 1.5)": (
                    f"http://127.0.0.1:{azure_port}/score",
                    lambda rows: rows,
                    {},
                ),
            }
            runs: dict[str, dict[str, list[dict]]] = {name: {"1 row": [], "100 rows": []} for name in servers}
            for url, shape, headers in servers.values():
                autocannon(url, shape(one), headers, 2)  # warm-up
            for _ in range(args.repeat):  # rounds interleave the servers, so the host's noise hits all alike
                for name, (url, shape, headers) in servers.items():
                    for body, rows in (("1 row", one), ("100 rows", hundred)):
                        runs[name][body].append(autocannon(url, shape(rows), headers, args.seconds))
            results = {name: {body: median_run(r) for body, r in by_body.items()} for name, by_body in runs.items()}
            if args.profile:
                profile(live.detail["pid"], f"{target.url}/score", one, key)
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
            target.stop_all()

    print(
        f"median of {args.repeat} runs of {args.seconds} s (range in brackets), 16 connections, server on CPU "
        f"{SERVER_CPU}, load on CPU {LOAD_CPU}\n"
    )
    print("| server | body | req/s | rows/s | p50 ms | p97.5 ms | p99 ms | errors (all runs) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, by_body in results.items():
        for body, r in by_body.items():
            rows = 100 if body == "100 rows" else 1
            low, high = (f"{x * rows:,.0f}" for x in r["req_per_s_range"])
            print(
                f"| {name} | {body} | {r['req_per_s']:,.0f} | {r['req_per_s'] * rows:,.0f} [{low}-{high}] | "
                f"{r['p50_ms']} | {r['p97_5_ms']} | {r['p99_ms']} | {r['errors']} |"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
