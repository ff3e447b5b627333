"""The serving_quality checks on one version's window, each with its number, its bar and the setting to change.
They judge what serves; none of them blocks anything (the bar for taking traffic was the rollout's gates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fin_behavior.monitoring.profile import Drift, ReferenceProfile, drift
from fin_behavior.monitoring.window import VersionTraffic
from fin_behavior.outcome import Outcome
from fin_behavior.settings import Settings

CHECKS = {  # name -> what it asks
    "traffic_volume": "Enough scored rows in the window for the drift checks to mean something (min_monitor_rows).",
    "latency_slo": "p95 latency of scoring requests <= max_latency_ms.",
    "error_rate": "Share of scoring requests not answered 200 <= max_error_rate.",
    "input_drift": "No feature's PSI against the version's reference profile >= psi_alert (warn from psi_warn).",
    "prediction_drift": "PSI of the probabilities against the version's hold-out < psi_alert.",
}


@dataclass(frozen=True)
class Judged:
    outcome: Outcome
    warning: bool = False  # a failure that warns (severity WARN) rather than alarms


@dataclass(frozen=True)
class Quality:
    """One version's window: the figures, the drift and the verdicts."""

    version: str
    figures: dict[str, Any]
    drift: Drift | None
    checks: dict[str, Judged]

    @property
    def failed(self) -> dict[str, Judged]:
        return {name: judged for name, judged in self.checks.items() if not judged.outcome.passed}


def judge(traffic: VersionTraffic, profile: ReferenceProfile | None, settings: Settings) -> Quality:
    names = list(profile["features"]) if profile else []
    columns, probabilities = traffic.sample(names) if profile else ({}, [])
    measured = drift(profile, columns, probabilities) if profile and probabilities else None
    latency = traffic.latency_percentiles()
    statuses = dict(sorted(traffic.outcomes.items()))
    figures = {
        "requests": traffic.requests,
        "rows": traffic.rows,
        **latency,
        "error_rate": round(traffic.error_rate(), 6),
        "outcomes": {str(k): v for k, v in statuses.items()},
        "unknown_categories": dict(traffic.unknown.most_common()),
        "sampled_rows": measured.rows if measured else 0,
        "probe_requests": traffic.probes,  # the platform's own: in none of the figures above
    }
    enough = measured is not None and measured.rows >= settings.min_monitor_rows
    volume = Outcome(
        enough,
        measured.rows if measured else 0,
        settings.min_monitor_rows,
        f"{measured.rows if measured else 0} logged rows with inputs in the window ({traffic.requests} requests), "
        f"{'enough' if enough else 'not enough'} for a drift verdict (setting min_monitor_rows)",
    )
    checks = {
        "traffic_volume": Judged(volume, warning=True),
        "latency_slo": Judged(_latency(latency["p95_ms"], traffic.requests, settings)),
        "error_rate": Judged(_errors(traffic, settings)),
    }
    if not enough:
        quiet = Outcome(True, "n/a", settings.psi_alert, "not enough traffic for a drift verdict: " + volume.message)
        checks |= {"input_drift": Judged(quiet), "prediction_drift": Judged(quiet)}
    elif profile is None or measured is None:
        missing = Outcome(False, "n/a", settings.psi_alert, f"v{traffic.version}'s bundle has no reference profile")
        checks |= {"input_drift": Judged(missing), "prediction_drift": Judged(missing)}
    else:
        checks |= {
            "input_drift": _input_drift(measured, settings),
            "prediction_drift": _prediction_drift(measured, settings),
        }
    return Quality(traffic.version, figures, measured, checks)


def _latency(p95: float, requests: int, settings: Settings) -> Outcome:
    bar = settings.max_latency_ms
    return Outcome(
        p95 <= bar,
        p95,
        bar,
        f"p95 {p95:.2f} ms over {requests} requests (bar {bar} ms, setting max_latency_ms)",
    )


def _errors(traffic: VersionTraffic, settings: Settings) -> Outcome:
    rate, bar = traffic.error_rate(), settings.max_error_rate
    errors = sorted(((n, s) for s, n in traffic.outcomes.items() if s != 200), reverse=True)
    detail = ", ".join(f"{n} x {s}" for n, s in errors) or "none"
    return Outcome(
        rate <= bar,
        round(rate, 6),
        bar,
        f"{rate:.2%} of {traffic.requests} requests not answered 200 ({detail}); "
        f"bar {bar:.2%} (setting max_error_rate)",
    )


def _input_drift(measured: Drift, settings: Settings) -> Judged:
    worst = [(name, score) for name, score in measured.features.items() if score >= settings.psi_warn]
    top = max(measured.features.values(), default=0.0)
    if not worst:
        name = next(iter(measured.features), "-")
        message = f"no feature drifted: the largest PSI is {top:.3f} ({name}), under {settings.psi_warn} (psi_warn)"
        return Judged(Outcome(True, round(top, 4), settings.psi_alert, message))
    named = ", ".join(f"{name} {score:.3f}" for name, score in worst)
    alarm = top >= settings.psi_alert
    level = f">= {settings.psi_alert} (psi_alert)" if alarm else f">= {settings.psi_warn} (psi_warn)"
    message = f"inputs drifted from the reference, PSI {level}: {named} (on {measured.rows} sampled rows)"
    return Judged(Outcome(False, round(top, 4), settings.psi_alert, message), warning=not alarm)


def _prediction_drift(measured: Drift, settings: Settings) -> Judged:
    score = measured.probability
    passed = score < settings.psi_alert
    message = (
        f"PSI of the probabilities against the hold-out: {score:.3f} on {measured.rows} sampled rows "
        f"(bar {settings.psi_alert}, setting psi_alert)"
    )
    return Judged(Outcome(passed, round(score, 4), settings.psi_alert, message))
