"""Time from `fin-behavior submit` to a serving URL, for the seed's example script.

    .venv/bin/python benchmarks/submission_to_url.py [--runs 3] [--cold-download]

Each run is `fin-behavior submit train.py --name bench --requirement scikit-learn --wait` (the seed's example:
make_classification, a 100-tree RandomForestClassifier, mlflow.sklearn.log_model) on a new state directory and
a new Dagster instance, timed from the command's start to its exit with the URL; the stages come from the
submission's record. Scenarios:

  env cached     the script's environment already built (a resubmission, or another script with the same
                 requirements)
  env built      no environment built: resolved and installed with uv from uv's download cache as this
                 machine has it
  cold download  (--cold-download) no environment and an empty uv cache: every wheel (MLflow and its
                 dependencies, scikit-learn, the server packages: ~300 MB) downloaded from PyPI
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fin_behavior.records import read_json
from fin_behavior.submissions.api import EXAMPLE

CLI = [sys.executable, "-m", "fin_behavior.cli"]
STAGES = ("queued", "preparing", "training", "validating", "verifying", "deploying", "deployed")


def submit(tmp: Path, envs: Path, uv_cache: Path | None) -> dict:
    """One submission on a new state directory: wall seconds and seconds per stage."""
    state = Path(tempfile.mkdtemp(dir=tmp))
    submissions = Path(tempfile.mkdtemp(prefix="fin-behavior-bench-", dir="/tmp"))
    submissions.chmod(0o755)  # the sandbox user reaches its working directory
    (state / "dagster_home").mkdir()
    env = os.environ | {
        "FIN_BEHAVIOR_VAR_DIR": str(state / "var"),
        "FIN_BEHAVIOR_SUBMISSIONS_DIR": str(submissions),
        "FIN_BEHAVIOR_ENVS_DIR": str(envs),
        "DAGSTER_HOME": str(state / "dagster_home"),
    }
    if uv_cache:
        env["UV_CACHE_DIR"] = str(uv_cache)
    script = state / "train.py"
    script.write_text(EXAMPLE)
    command = [*CLI, "submit", str(script), "--name", "bench", "--requirement", "scikit-learn", "--wait"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    try:
        if done.returncode != 0:
            logs = "".join(p.read_text() for p in submissions.glob("endpoints/*/logs/*.log"))
            sys.exit(f"the submission failed (environments in {envs}):\n{done.stdout}\n{done.stderr}\n{logs}")
        submission_id = re.search(r"submission (\w+): bench", done.stdout)[1]
        timings = read_json(submissions / submission_id / "submission.json")["timings"]
        marks = [timings[s] for s in STAGES[1:]]
        stages = dict(zip(STAGES[1:-1], [b - a for a, b in itertools.pairwise(marks)], strict=True))
        return {"wall": wall, "to_deployed": timings["deployed"], "stages": stages}
    finally:
        subprocess.run([*CLI, "submissions", "stop", "bench"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", str(submissions)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-download", action="store_true", help="also measure with an empty uv cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as work:
        tmp = Path(work)
        tmp.chmod(0o755)  # the environments in it are run by the sandbox user
        results: dict[str, list[dict]] = {"env built": [], "env cached": []}
        for run in range(args.runs):
            envs = tmp / f"envs-{run}"  # new for each run: the first submission builds, the second reuses
            results["env built"].append(submit(tmp, envs, None))
            results["env cached"].append(submit(tmp, envs, None))
        if args.cold_download:
            results["cold download"] = [submit(tmp, tmp / "envs-cold", tmp / "uv-cache")]
    print(f"{'scenario':<14} {'command s (median, all)':<34} " + " ".join(f"{s:>10}" for s in STAGES[1:-1]))
    for scenario, runs in results.items():
        walls = [r["wall"] for r in runs]
        first = runs[0]["stages"]
        all_runs = ", ".join(f"{w:.1f}" for w in walls)
        print(
            f"{scenario:<14} {statistics.median(walls):6.1f} ({all_runs})".ljust(49)
            + " ".join(f"{first[s]:10.1f}" for s in STAGES[1:-1])
        )


if __name__ == "__main__":
    main()
