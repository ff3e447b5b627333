"""Batch scoring end to end (read, validate, derive, score, write) on a generated file in the bank's layout, on
ONE core: the scoring process and its model worker (the bundle in its serving environment) are both pinned to
CPU 0 with taskset. Reports wall time, rows per minute, and the peak RSS of the platform process and of the model
worker (getrusage SELF and CHILDREN in the scoring process), each including interpreter start-up and imports.

    .venv/bin/python benchmarks/batch_scoring.py --rows 1000000
    .venv/bin/python benchmarks/batch_scoring.py --rows 10000000      # the memory target (a 3.5 GB file)

The file is generated first (chunked, not timed) in a temporary folder removed afterwards; the bundle is built
once with the project's training (a short search) unless --bundle and --python name one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

_SCORE = """
import json, resource, sys
from pathlib import Path
from fin_behavior.batch import ModelWorker, score_file
source, out, bundle, python, chunk = sys.argv[1:6]
with ModelWorker(Path(python), Path(bundle)) as worker:
    summary = score_file(Path(source), Path(out), worker, "bench", chunk_rows=int(chunk))
print(json.dumps({
    "summary": summary.to_dict(),
    "platform_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--python", type=Path, help="the bundle's serving environment python (with --bundle)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        if args.bundle:
            bundle, python = args.bundle, args.python
        else:
            from _bundle import local_bundle

            started = time.perf_counter()
            bundle, python = local_bundle(work / "model")
            print(f"bundle built in {time.perf_counter() - started:.0f} s: {bundle}", flush=True)
        from fin_behavior.data.generate import generate_csv

        started = time.perf_counter()
        source = generate_csv(work / "night.csv", rows=args.rows, seed=7)
        size = source.stat().st_size / 2**20
        print(f"{args.rows:,} rows generated in {time.perf_counter() - started:.0f} s ({size:,.0f} MiB)", flush=True)

        command = ["taskset", "-c", "0", sys.executable, "-c", _SCORE]
        command += [str(source), str(work / "out"), str(bundle), str(python), str(args.chunk_rows)]
        started = time.perf_counter()
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        result = json.loads(out.stdout.strip().splitlines()[-1])
        summary = result["summary"]
        print(
            json.dumps(
                {
                    "rows": summary["rows"],
                    "scored": summary["scored"],
                    "quarantined": summary["quarantined"],
                    "chunk_rows": args.chunk_rows,
                    "file_mib": round(size),
                    "wall_seconds": round(seconds, 1),
                    "scoring_seconds": summary["seconds"],
                    "rows_per_minute": round(summary["rows"] / seconds * 60),
                    "platform_peak_mib": round(result["platform_peak_mib"]),
                    "worker_peak_mib": round(result["worker_peak_mib"]),
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
