"""Blue/green rollout, the same for every target: start the new version on the idle color, gate it before it
gets any traffic, move the traffic, and on any failure put everything back. Targets (local processes, Azure ML
deployments) only adapt these steps to their platform; the order and the safety live here."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fin_behavior.outcome import Outcome
from fin_behavior.records import BundleFiles, ModelInfo
from fin_behavior.settings import Settings

COLORS = ("blue", "green")
SMOKE_RECORDS = 5


@dataclass(frozen=True)
class Release:
    """A registered model version, its bundle downloaded, ready to be served."""

    model_name: str
    version: str
    bundle: Path
    info: ModelInfo  # the bundle's manifest, verified
    expected: dict[str, list]  # expected.json: known records and the answers verified for them

    @property
    def environment(self) -> tuple[Path, str, str]:
        """Its environment's record in the bundle, name and fingerprint (builder.ensure_locked's arguments)."""
        return self.bundle / BundleFiles.ENVIRONMENT, self.info.serving_environment, self.info.environment_fingerprint

    @property
    def answers(self) -> list[float]:
        """What the verified model answered for `expected["records"]` (see `answers_of`)."""
        return answers_of(self.expected)


def answers_of(body: dict) -> list[float]:
    """The numbers a scoring answer (or expected.json) compares on: probabilities where the model gives them
    (the built-in model), else its predictions (a submitted MLflow model)."""
    return body["probabilities"] if "probabilities" in body else body["predictions"]


@dataclass
class Slot:
    """One color of the endpoint serving one version; `detail` is the target's own (pid, port, deployment...)."""

    color: str
    version: str
    detail: dict[str, Any] = field(default_factory=dict)


class Target(Protocol):
    name: str
    splits_traffic: bool  # can hold shares of traffic (canary steps); `shift` is only called where True

    @property
    def url(self) -> str: ...  # the public URL, as clients see it
    def live(self) -> Slot | None: ...
    def start(self, release: Release, color: str) -> Slot: ...  # started and ready, or raises
    # slot None = through the public URL, as clients see it
    def score(self, slot: Slot | None, records: list[dict]) -> tuple[list[float], str]: ...  # probas, version
    def switch(self, new: Slot, old: Slot | None) -> None: ...  # all traffic to `new`
    def shift(self, new: Slot, old: Slot, percent: int) -> None: ...
    def switch_back(self, new: Slot, old: Slot | None) -> None: ...  # all traffic to `old` again
    def ready(self, slot: Slot | None) -> bool: ...
    def retire(self, slot: Slot, keep: bool) -> None: ...  # stop it (or keep it idle) after a success
    def discard(self, slot: Slot) -> None: ...  # stop a color that failed
    # champion and challenger (deploy/challengers.py): `slot` (started, gated) gets a shadow's copies or a split's
    # share of the live traffic; a target that cannot raises RolloutError saying so
    def challenge(self, slot: Slot, mode: str, share: float, timeout: float) -> None: ...
    def challenger(self) -> Slot | None: ...  # the running challenger, if any
    def end_challenge(self, slot: Slot) -> None: ...  # the live color alone again; the challenger stopped
    def logs(self, slot: Slot, lines: int) -> str: ...


class RolloutError(RuntimeError):
    """The new version did not take traffic; the old one (if any) still serves. Carries the new color's log."""

    def __init__(self, reason: str, log_tail: str = "", gates: dict[str, Outcome] | None = None):
        super().__init__(reason)
        self.reason, self.log_tail, self.gates = reason, log_tail, gates or {}
        self.traffic_restored = False  # the new color had taken traffic and it was put back (automatic rollback)

    def __str__(self) -> str:
        tail = f"\n--- last lines of the new color's log ---\n{self.log_tail}" if self.log_tail else ""
        return f"{self.reason}{tail}"


@dataclass(frozen=True)
class GateSettings:
    max_latency_ms: float
    parity_tolerance: float  # served vs verified probability, same runtime: only JSON rounding differs
    latency_requests: int
    # Canary: shares of traffic (%) the new color holds, each watched for step_seconds, before it takes all.
    # Only targets that split traffic (Azure ML) take steps; the local endpoint moves it at once.
    traffic_steps: tuple[int, ...]
    step_seconds: float
    confirm_seconds: float  # after the switch, how long the URL may take to answer with the new version

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> GateSettings:
        values: dict[str, Any] = {
            "max_latency_ms": settings.max_latency_ms,
            "parity_tolerance": settings.serving_parity_tolerance,
            "latency_requests": settings.gate_latency_requests,
            "traffic_steps": settings.traffic_steps,
            "step_seconds": settings.traffic_step_seconds,
            "confirm_seconds": settings.deploy_start_timeout_seconds,
        }
        return cls(**(values | overrides))


@dataclass(frozen=True)
class RolloutResult:
    new: Slot
    replaced: Slot | None
    gates: dict[str, Outcome]
    seconds: float


Scorer = Callable[[list[dict]], tuple[list[float], str]]


def smoke(score: Scorer, release: Release) -> Outcome:
    records = release.expected["records"][:SMOKE_RECORDS]
    try:
        proba, version = score(records)
    except Exception as exc:
        return Outcome(False, "error", "200", f"scoring {len(records)} known records failed: {exc}")
    problems = []
    if version != release.version:
        problems.append(f"it says it serves version {version}, not {release.version}")
    if len(proba) != len(records):
        problems.append(f"{len(proba)} answers for {len(records)} records")
    elif "probabilities" in release.expected and not all(0.0 <= p <= 1.0 for p in proba):
        problems.append("probabilities outside [0, 1]")
    return Outcome(
        not problems, version, release.version, "; ".join(problems) or f"{len(records)} known records scored"
    )


def parity(score: Scorer, release: Release, tolerance: float) -> Outcome:
    """The known records scored as verified; and their raw twins (expected.json `raw_records`, the bank's layout,
    derived by the service's feature definition) to the same answers."""
    records, expected = release.expected["records"], release.answers
    raw = release.expected.get("raw_records", [])
    try:
        proba, _ = score(records)
        if raw:
            proba = proba + score(raw)[0]
            records, expected = records + raw, expected + expected
    except Exception as exc:
        return Outcome(False, "error", tolerance, f"scoring the {len(records)} parity records failed: {exc}")
    if not all(isinstance(a, int | float) for a in [*proba, *expected]):  # labels a submitted model answers with
        differ = sum(a != b for a, b in zip(proba, expected, strict=False)) + abs(len(proba) - len(expected))
        return Outcome(differ == 0, differ, 0, f"{differ} of {len(records)} known records answered differently")
    diff = float(np.max(np.abs(np.asarray(proba) - np.asarray(expected)))) if records else 0.0
    return Outcome(
        diff <= tolerance,
        diff,
        tolerance,
        f"max |served - verified| answer {diff:.2e} over {len(records)} known records (tolerance {tolerance:.0e})",
    )


def latency(score: Scorer, release: Release, requests: int, max_latency_ms: float) -> Outcome:
    record = release.expected["records"][:1]
    times = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            score(record)
            times.append((time.perf_counter() - started) * 1e3)
    except Exception as exc:
        return Outcome(False, "error", max_latency_ms, f"latency probe failed: {exc}")
    p95 = float(np.percentile(times, 95))
    return Outcome(
        p95 <= max_latency_ms,
        round(p95, 3),
        max_latency_ms,
        f"p95 {p95:.2f} ms over {requests} single-row requests (limit {max_latency_ms} ms, setting max_latency_ms)",
    )


def run_gates(score: Scorer, release: Release, settings: GateSettings) -> dict[str, Outcome]:
    return {
        "smoke": smoke(score, release),
        "parity": parity(score, release, settings.parity_tolerance),
        "latency": latency(score, release, settings.latency_requests, settings.max_latency_ms),
    }


def canary_steps(target: Target, old: Slot | None, gates: GateSettings, log: Callable[[str], None]) -> tuple[int, ...]:
    if not gates.traffic_steps or old is None:  # a first deployment has no traffic to share
        return ()
    if not target.splits_traffic:
        log(f"{target.name} moves traffic at once; traffic_steps {list(gates.traffic_steps)} do not apply")
        return ()
    return gates.traffic_steps


def watch(target: Target, new: Slot, release: Release, seconds: float, when: str) -> None:
    """Wait, then require the new color still provisioned and still answering the known records correctly."""
    time.sleep(seconds)
    if not target.ready(new):
        raise RolloutError(f"v{release.version} on {new.color} stopped being ready {when}")
    outcome = smoke(lambda records: target.score(new, records), release)
    if not outcome.passed:
        raise RolloutError(f"v{release.version} on {new.color} failed the smoke test {when}: {outcome.message}")


def answering(target: Target, release: Release) -> str | None:
    """The version that answers a known record at the target's URL, as a client sees it; None if none does."""
    try:
        return target.score(None, release.expected["records"][:1])[1]
    except Exception:  # refused, reset, 5xx: nothing answers
        return None


def confirm(target: Target, release: Release, within: float) -> None:
    """The URL answers with the new version (a supervisor may be restarting it), or RolloutError saying what
    answers instead: a rollout's last words are what a client sees."""
    deadline = time.monotonic() + within
    while (seen := answering(target, release)) != release.version and time.monotonic() < deadline:
        time.sleep(0.2)
    if seen != release.version:
        what = f"v{seen}" if seen else "nothing"
        raise RolloutError(f"v{release.version} took the traffic, but {target.url} answers with {what}")


def idle_color(live: Slot | None) -> str:
    return COLORS[1] if live is not None and live.color == COLORS[0] else COLORS[0]


def rollout(
    target: Target,
    release: Release,
    gates: GateSettings,
    *,
    keep_old: bool = False,
    approved: bool = True,
    log: Callable[[str], None] = print,
) -> RolloutResult:
    """Put `release` in service on `target`, or raise RolloutError with the old color still serving."""
    started = time.monotonic()
    old = target.live()
    color = idle_color(old)
    log(
        f"{target.name}: {'v' + old.version + ' serves on ' + old.color if old else 'nothing serves yet'}; "
        f"starting v{release.version} on {color}"
    )
    new: Slot | None = None
    outcomes: dict[str, Outcome] = {}
    switched = False
    try:
        new = target.start(release, color)
        outcomes = run_gates(lambda records: target.score(new, records), release, gates)
        for name, outcome in outcomes.items():
            log(f"gate {name}: {'passed' if outcome.passed else 'FAILED'}: {outcome.message}")
        failed = [f"{name}: {o.message}" for name, o in outcomes.items() if not o.passed]
        if failed:
            raise RolloutError(f"v{release.version} failed its gates on {color}: " + "; ".join(failed))
        if not approved:
            raise RolloutError(
                f"v{release.version} passed its gates on {color}, but {target.name} needs approval before traffic "
                "moves: set auto_approve (run config) to let it"
            )
        switched = True  # from here on, a failure puts the traffic back
        for percent in canary_steps(target, old, gates, log):
            if old is None:  # canary_steps takes no step on a first deployment: nothing to share traffic with
                raise RolloutError(f"v{release.version}: a canary step needs a color already serving")
            target.shift(new, old, percent)
            log(f"{percent}% of traffic on {color}; watching it for {gates.step_seconds:g} s")
            watch(target, new, release, gates.step_seconds, f"with {percent}% of traffic")
        target.switch(new, old)
        if not target.ready(new):
            raise RolloutError(f"v{release.version} on {color} stopped being ready right after taking traffic")
    except Exception as exc:
        error = exc if isinstance(exc, RolloutError) else RolloutError(f"{type(exc).__name__}: {exc}")
        if new is not None:
            error.log_tail = target.logs(new, 40)
            if switched:
                target.switch_back(new, old)
                error.traffic_restored = True
            target.discard(new)
        error.gates = outcomes
        log(f"rolled back: {error.reason}; {'v' + old.version + ' still serves' if old else 'nothing was serving'}")
        raise error from None
    if old is not None:
        target.retire(old, keep_old)
    confirm(target, release, gates.confirm_seconds)
    log(f"v{release.version} serves on {color} at {target.url}")
    return RolloutResult(new, old, outcomes, time.monotonic() - started)
