"""Tick time of data_version_sensor on a large raw file: the first tick hashes it, later ticks only stat.

.venv/bin/python benchmarks/sensor_tick.py [SIZE_MIB]      (default 1024)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from fin_behavior.defs.resources import StorageResource
from fin_behavior.defs.sensors import data_version_sensor


def main(size_mib: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        raw = Path(tmp) / "raw.csv"
        block = b"x" * (1 << 20)
        with open(raw, "wb") as f:
            for _ in range(size_mib):
                f.write(block)
        storage = StorageResource(raw_data_path=str(raw), var_dir=str(Path(tmp) / "var"))

        def tick() -> float:
            context = dg.build_sensor_context(instance=instance, resources={"storage": storage})
            started = time.perf_counter()
            data_version_sensor(context)
            return time.perf_counter() - started

        first = tick()
        later = [tick() for _ in range(10)]
    print("| raw file | first tick (hashes) | unchanged tick, median of 10 | max |")
    print("|---:|---:|---:|---:|")
    print(
        f"| {size_mib:,} MiB | {first:.2f} s | {statistics.median(later) * 1000:.1f} ms | {max(later) * 1000:.1f} ms |"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1024)
