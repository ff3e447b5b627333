"""Run a Python snippet in a fresh interpreter; report its wall time and its own peak RSS."""

from __future__ import annotations

import subprocess
import sys
import time

_REPORT_PEAK = "\nimport resource as _r; print('PEAK_KIB', _r.getrusage(_r.RUSAGE_SELF).ru_maxrss)"


def run_measured(code: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MiB, stdout without the peak line) of `python -c code` in a child process."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code + _REPORT_PEAK], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    *lines, peak_line = out.stdout.rstrip("\n").split("\n")
    return seconds, int(peak_line.split()[1]) / 1024, "\n".join(lines)
