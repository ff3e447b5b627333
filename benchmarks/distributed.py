"""full_pipeline in process vs on two Celery workers, wall time, on 5,000 and 1,000,000 rows.

    make setup-distributed   # and apt-get install -y redis-server postgresql
    .venv/bin/python benchmarks/distributed.py [--rows 5000 1000000]

Both start from empty state directories (no built serving environment, uv's download cache warm) with the default
search: in process, the run's one process does every step, with SQLite MLflow and local artifacts; distributed,
the cluster of fin_behavior_tests/distributed/cluster.py (Redis, Postgres, an MLflow server, a `compute` and a
`serving` worker that share nothing but those and the artifact store) runs the steps, and the time to start its
services is reported apart. Each run ends with the model serving at its endpoint, which is then stopped.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test suite's cluster, from a checkout

from fin_behavior.data.generate import generate_csv
from fin_behavior.deploy.local import free_port
from fin_behavior_tests.distributed.cluster import BIN, local_cluster

FULL_PIPELINE = [str(BIN / "dagster"), "job", "execute", "-m", "fin_behavior.definitions", "-j", "full_pipeline"]


def timed_run(env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(FULL_PIPELINE, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=7_200)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"full_pipeline failed after {seconds:.0f} s: see {log}")
    return seconds


def in_process(root: Path, raw: Path) -> float:
    home = root / "dagster_home"
    home.mkdir(parents=True)
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "FIN_BEHAVIOR_VAR_DIR": str(root / "var"),
        "FIN_BEHAVIOR_RAW_DATA_PATH": str(raw),
        "FIN_BEHAVIOR_ENDPOINT_PORT": str(free_port()),
    }
    try:
        return timed_run(env, root / "run.log")
    finally:
        subprocess.run([str(BIN / "fin-behavior"), "endpoint", "stop"], env=env, capture_output=True)


def distributed(root: Path, raw: Path) -> tuple[float, float]:
    started = time.perf_counter()
    with local_cluster(root, raw) as cluster:
        services = time.perf_counter() - started
        return services, timed_run(cluster.env_of(root / "shell"), root / "run.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000, 1_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("| rows | in process | on two Celery workers | services started in |")
        print("|---:|---:|---:|---:|")
        for rows in args.rows:
            raw = generate_csv(work / f"raw-{rows}.csv", rows=rows)
            alone = in_process(work / f"in-process-{rows}", raw)
            print(f"{rows:,} rows in process: {alone:.1f} s", file=sys.stderr, flush=True)
            services, spread = distributed(work / f"celery-{rows}", raw)
            print(f"| {rows:,} | {alone:.1f} s | {spread:.1f} s | {services:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
