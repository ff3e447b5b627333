"""Monitoring plots as PNG files: latency by version, PSI by feature."""

from __future__ import annotations

from datetime import UTC
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


def realized_over_time(timeline: list[dict], validation: float | None, tolerance: float, path: Path) -> Path:
    """Realized ROC-AUC by slice of prediction time, next to the validation figure and the bar."""
    from datetime import datetime

    plt, fig, ax = figure()
    times = [datetime.fromtimestamp(p["time"], tz=UTC) for p in timeline]
    ax.plot(times, [p["roc_auc"] for p in timeline], marker="o", label="realized ROC-AUC")
    if validation is not None:
        ax.axhline(validation, color="green", linestyle="--", label=f"validation {validation:.3f}")
        ax.axhline(validation - tolerance, color="red", linestyle="--", label=f"bar (tolerance {tolerance:g})")
    ax.set_xlabel("prediction time (UTC)")
    ax.set_title("Realized vs validation ROC-AUC")
    ax.tick_params(axis="x", labelsize=6, rotation=30)
    ax.legend(fontsize=7)
    return save(plt, fig, path)


def reliability(bins: dict, path: Path) -> Path:
    """Observed positive rate against the mean probability answered, per probability bin."""
    plt, fig, ax = figure()
    used = [i for i, n in enumerate(bins["count"]) if n]
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    ax.plot(
        [bins["mean_probability"][i] for i in used],
        [bins["positive_rate"][i] for i in used],
        marker="o",
        label="served",
    )
    ax.set_xlabel("probability answered")
    ax.set_ylabel("observed positive rate")
    ax.set_title("Calibration on the labelled decisions")
    ax.legend(fontsize=7)
    return save(plt, fig, path)


def challenger_differences(differences: np.ndarray, intervals: dict[str, list[float]], path: Path) -> Path:
    """The paired bootstrap's ROC-AUC differences (challenger - champion), the intervals by name, and zero."""
    plt, fig, ax = figure()
    ax.hist(differences, bins=50, alpha=0.7, label=f"{len(differences)} paired resamples")
    ax.axvline(0.0, color="black", linestyle=":", label="no difference")
    for (name, (low, high)), color in zip(intervals.items(), ("red", "purple"), strict=False):
        ax.axvline(low, color=color, linestyle="--")
        ax.axvline(high, color=color, linestyle="--", label=f"{name} interval [{low:+.4f}, {high:+.4f}]")
    ax.set_xlabel("ROC-AUC challenger - champion")
    ax.set_title("Champion vs challenger on the same labelled decisions")
    ax.legend(fontsize=7)
    return save(plt, fig, path)
