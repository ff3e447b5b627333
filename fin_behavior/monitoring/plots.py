"""Monitoring plots as PNG files: latency by version, PSI by feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fin_behavior.ml.plots import figure, save
from fin_behavior.monitoring.window import Window


def latency_histogram(window: Window, path: Path, bar_ms: float) -> Path:
    plt, fig, ax = figure()
    for version, traffic in sorted(window.versions.items()):
        latencies = np.frombuffer(traffic.latencies_ms, dtype=float)
        if len(latencies):
            ax.hist(latencies, bins=50, alpha=0.6, label=f"v{version} ({len(latencies)} requests)")
    ax.axvline(bar_ms, color="red", linestyle="--", label=f"max_latency_ms {bar_ms:g}")
    ax.set_xlabel("latency ms")
    ax.set_title("Scoring latency in the window")
    ax.legend(fontsize=7)
    return save(plt, fig, path)


def psi_bars(features: dict[str, float], path: Path, warn: float, alert: float) -> Path:
    plt, fig, ax = figure()
    names = list(features)[::-1]
    ax.barh(names, [features[n] for n in names])
    ax.axvline(warn, color="orange", linestyle="--", label=f"psi_warn {warn:g}")
    ax.axvline(alert, color="red", linestyle="--", label=f"psi_alert {alert:g}")
    ax.set_xlabel("PSI against the reference profile")
    ax.set_title("Input drift by feature")
    ax.tick_params(axis="y", labelsize=6)
    ax.legend(fontsize=7)
    return save(plt, fig, path)
