"""Time and peak memory of `fin-behavior generate-data` at growing row counts.

.venv/bin/python benchmarks/generate_data.py [ROWS ...]     (default: 5000 100000 1000000)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _measure import run_measured


def main(sizes: list[int]) -> None:
    print("| rows | seconds | peak RSS MiB | file MiB |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sorted(sizes):
            out = Path(tmp) / f"{rows}.csv"
            code = f"from fin_behavior.data.generate import generate_csv; generate_csv({str(out)!r}, rows={rows})"
            seconds, peak, _ = run_measured(code)
            print(f"| {rows:,} | {seconds:.1f} | {peak:.0f} | {out.stat().st_size / 2**20:.0f} |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5_000, 100_000, 1_000_000])
