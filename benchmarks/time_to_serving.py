"""Time from `dagster job execute ... -j full_pipeline` (the README's main command) to a serving endpoint, on
the embedded 5,000 rows, with per-stage times from Dagster's own step events.

    .venv/bin/python benchmarks/time_to_serving.py

cold: a new state directory and no serving environment built (uv's download cache stays as the machine has it);
warm: a new state directory, the serving environment already built (what a second project run sees, minus
the trained model it would reuse); rerun: the same command again on warm's state with nothing changed (a second
`make demo`: every stage finds its work done). Each state directory gets its own DAGSTER_HOME and endpoint port,
and its endpoint is stopped afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fin_behavior.deploy.local import free_port

BIN = Path(sys.executable).parent
STEP = re.compile(r'Finished execution of step "(\w+)" in ([\d.]+)(ms|s|m)')


def run_pipeline(var: Path, envs: Path, again: bool = False) -> tuple[float, dict[str, float]]:
    """One full_pipeline on `var` (a new one, or `again` on the last one's, its endpoint still up); stopped after
    unless `again` will follow."""
    home = var / "dagster_home"
    if not home.exists():
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        (var / "port").write_text(str(free_port()))
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "FIN_BEHAVIOR_VAR_DIR": str(var),
        "FIN_BEHAVIOR_ENVS_DIR": str(envs),
        "FIN_BEHAVIOR_ENDPOINT_PORT": (var / "port").read_text(),
    }
    started = time.perf_counter()
    out = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "fin_behavior.definitions", "-j", "full_pipeline"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if not again:
        subprocess.run([str(BIN / "fin-behavior"), "endpoint", "stop"], env=env, capture_output=True)
    if out.returncode != 0:
        sys.exit(f"full_pipeline failed:\n{out.stderr[-3000:]}")
    unit = {"ms": 1e-3, "s": 1.0, "m": 60.0}
    steps = {name: float(value) * unit[u] for name, value, u in STEP.findall(out.stderr + out.stdout)}
    return seconds, steps


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        envs = Path(tmp) / "envs"
        results = {
            "cold": run_pipeline(Path(tmp) / "cold", envs),
            "warm": run_pipeline(Path(tmp) / "warm", envs, again=True),
            "rerun": run_pipeline(Path(tmp) / "warm", envs),
        }
    names = list(results["cold"][1])
    print("| stage | cold s | warm s | rerun s |\n|---|---:|---:|---:|")
    for name in names:
        print(f"| {name} | " + " | ".join(f"{steps.get(name, 0):.1f}" for _, steps in results.values()) + " |")
    print("| **command to serving endpoint** | " + " | ".join(f"**{s:.1f}**" for s, _ in results.values()) + " |")


if __name__ == "__main__":
    main()
