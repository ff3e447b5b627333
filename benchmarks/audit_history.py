"""The history's costs: one append (lock, read the last record, write, fsync), reading every record (what
approval_sensor does each tick), and `verify`, for histories of N records.

    .venv/bin/python benchmarks/audit_history.py            # 1000 10000 100000 records
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from fin_behavior.governance import audit


def measure(records: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        history = audit.History(Path(tmp) / "audit")
        started = time.perf_counter()
        for n in range(records):
            history.append(audit.DEPLOY_STARTED, "financial-behavior-model", str(n % 50), "bench", target="local",
                           ref="candidate", by="Dagster run 0123456789abcdef (deploy)")  # fmt: skip
        append_ms = (time.perf_counter() - started) / records * 1000
        started = time.perf_counter()
        assert len(history.records()) == records
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        assert audit.verify(history.path).ok
        verify_s = time.perf_counter() - started
        size = history.path.stat().st_size / 2**20
    return {"append_ms": append_ms, "read_s": read_s, "verify_s": verify_s, "mib": size}


if __name__ == "__main__":
    print("| records | append ms (mean) | read all s | verify s | file MiB |\n|---:|---:|---:|---:|---:|")
    for count in [int(a) for a in sys.argv[1:]] or [1_000, 10_000, 100_000]:
        m = measure(count)
        print(f"| {count:,} | {m['append_ms']:.2f} | {m['read_s']:.2f} | {m['verify_s']:.2f} | {m['mib']:.1f} |")
