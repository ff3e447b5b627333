"""Champion and challenger on an endpoint: a registered version starts beside the live one, passes the same gates
as a deployment on its own color, then gets a shadow's copies of the live requests or a sticky split's share of
them (serving/traffic.py on the local target; Azure ML's mirror and traffic map). `stop` ends it; `promote` ends
it and deploys the challenger's version through the ordinary deployment (evidence, approval, gates, aliases):
nothing about being a challenger lets a version skip what every version must show.

A shadow never answers a client, so it needs the version's evidence and its gates; a split answers clients, so it
also needs the approval a deployment would (where the policy asks for one). Every step is a record of the
history. The comparison itself is monitoring's (monitoring/challenger.py, the `challenger_comparison` asset)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from fin_behavior.deploy.deployer import DeployError, Deployment, deploy, fetch_release, resolve_version, version_tags
from fin_behavior.deploy.lock import exclusive_rollout
from fin_behavior.deploy.rollout import GateSettings, RolloutError, Slot, Target, idle_color, run_gates
from fin_behavior.governance import approval, audit
from fin_behavior.settings import Settings

MODES = ("shadow", "split")


def start(
    client,
    settings: Settings,
    name: str,
    ref: str,
    target: Target,
    endpoint: Path,
    *,
    mode: str,
    share: float,
    who: str,
    actor: str = "",
    approved: bool = True,
    log: Callable[[str], None] = print,
) -> Slot:
    """Version `ref` as the endpoint's challenger (a running one is replaced), or DeployError / RolloutError with
    the live version serving alone, as before. `approved`: whether traffic may move on this target without an
    operator (a deploy run's `auto_approve`; a split only)."""
    if mode not in MODES:
        raise DeployError(f"unknown challenger mode {mode!r}: one of {', '.join(MODES)}")
    if not 0.0 < share <= 1.0:
        raise DeployError(f"a challenger's share is a fraction in (0, 1], not {share:g}")
    history, actor = audit.History.of(settings), actor or audit.actor(settings.actor)
    with exclusive_rollout(endpoint, f"{who}: {mode} {ref} of {name}", settings.rollout_lock_timeout_seconds, log):
        version = resolve_version(client, name, ref)
        noted = {"target": target.name, "mode": mode, "share": share, "by": who}
        slot: Slot | None = None
        try:
            live = target.live()
            if live is None:
                raise DeployError(
                    f"nothing serves at {target.url}: a challenger needs a live version; deploy one first"
                )
            if live.version == version:
                raise DeployError(f"v{version} is the live version itself: name another version to challenge it")
            if mode == "split":  # it will answer clients: what a deployment needs before traffic moves
                if not approved:
                    raise DeployError(f"a split moves client traffic to v{version} on {target.name}: set auto_approve "
                                      "(run config) to let it")  # fmt: skip
                approval.require_approved(
                    settings.approval_required, name, version, version_tags(client, name, version)
                )
            release = fetch_release(client, name, version, endpoint / "releases")
            if (running := target.challenger()) is not None:
                log(f"ending the running challenger v{running.version} first")
                target.end_challenge(running)
            color = idle_color(live)
            log(f"v{live.version} serves on {live.color}; starting challenger v{version} on {color}")
            slot = target.start(release, color)
            gates = run_gates(
                lambda records: target.score(slot, records), release, GateSettings.from_settings(settings)
            )
            for gate, outcome in gates.items():
                log(f"gate {gate}: {'passed' if outcome.passed else 'FAILED'}: {outcome.message}")
            if failed := [f"{gate}: {o.message}" for gate, o in gates.items() if not o.passed]:
                raise RolloutError(
                    f"challenger v{version} failed its gates on {color}: " + "; ".join(failed), gates=gates
                )
            traffic_from = time.time()  # the history's record is written after: its own time may be later
            target.challenge(slot, mode, share, settings.challenger_timeout_seconds)
        except (DeployError, RolloutError, approval.PendingApprovalError) as exc:
            if slot is not None:  # started, but it gets no traffic: nothing of it stays
                target.discard(slot)
            history.append(audit.CHALLENGER_FAILED, name, version, actor, **noted, reason=str(exc)[:1_000])
            if isinstance(exc, approval.PendingApprovalError):
                raise DeployError(str(exc)) from None
            raise
        history.append(
            audit.CHALLENGER_STARTED,
            name,
            version,
            actor,
            **noted,
            champion=live.version,
            color=color,
            traffic_from=round(traffic_from, 3),
        )
    log(f"challenger v{version} on {color}: {mode} of {share:.0%} of the clients' requests at {target.url}")
    return slot


class Experiment(NamedTuple):
    mode: str  # shadow or split
    started: float  # Unix seconds: when its traffic began
    ended: float | None  # when it ended (stopped, replaced, promoted); None while it runs


def latest_experiment(settings: Settings, name: str, champion: str, challenger: str) -> Experiment | None:
    """The latest experiment of `name` v`challenger` beside v`champion`, as the history recorded it; None without
    one. A record this cannot read (an old or edited history) is passed over, never taken on trust."""
    records = audit.History.of(settings).records()
    for at in range(len(records) - 1, -1, -1):
        record = records[at]
        details = record.get("details")
        if (record.get("event"), record.get("model"), record.get("version")) != (
            audit.CHALLENGER_STARTED, name, challenger
        ) or not isinstance(details, dict) or details.get("champion") != champion:  # fmt: skip
            continue
        mode, started = details.get("mode"), _seconds(details.get("traffic_from"), record.get("time"))
        if mode not in MODES or started is None:
            continue
        ended = next(
            (_seconds(None, later.get("time")) for later in records[at + 1 :] if _ends(later, name, challenger)), None
        )
        return Experiment(mode, started, ended)
    return None


def _ends(record: dict, name: str, version: str) -> bool:
    """Whether `record` ends an experiment of `name` v`version`: it was stopped, or another one began."""
    if record.get("model") != name:
        return False
    event = record.get("event")
    return (event == audit.CHALLENGER_STOPPED and record.get("version") == version) or event == audit.CHALLENGER_STARTED


def _seconds(epoch: object, iso: object) -> float | None:
    """Unix seconds from a number, else from an ISO 8601 time (audit.parse_since: without an offset, UTC); None if
    neither reads."""
    if isinstance(epoch, int | float) and not isinstance(epoch, bool):
        return float(epoch)
    try:
        return audit.parse_since(str(iso))
    except ValueError:
        return None


def stop(settings: Settings, name: str, target: Target, endpoint: Path, *, who: str, actor: str = "", log=print):
    """End the running challenger (the live version alone again; the challenger's color stopped). Returns its
    version, None when none ran."""
    with exclusive_rollout(
        endpoint, f"{who}: stop the challenger of {name}", settings.rollout_lock_timeout_seconds, log
    ):
        slot = target.challenger()
        if slot is None:
            return None
        target.end_challenge(slot)
        who_did = actor or audit.actor(settings.actor)
        audit.History.of(settings).append(
            audit.CHALLENGER_STOPPED, name, slot.version, who_did, target=target.name, by=who
        )
    log(f"challenger v{slot.version} stopped; the live version answers alone")
    return slot.version


def promote(
    client, settings: Settings, name: str, target: Target, endpoint: Path, *, who: str, actor: str = "", log=print
) -> Deployment:
    """The challenger's version into service through the ordinary deployment (its evidence, the approval policy,
    the gates on a fresh color, then `production` moves); DeployError when no challenger runs."""
    slot = target.challenger()
    if slot is None:
        raise DeployError(f"no challenger runs at {target.url}: start one with `fin-behavior endpoint shadow|split`")
    try:  # what the deployment would refuse for, before the experiment ends
        tags = version_tags(client, name, slot.version)
        approval.require_approved(settings.approval_required, name, slot.version, tags)
        fetch_release(client, name, slot.version, endpoint / "releases")
    except (DeployError, approval.PendingApprovalError) as exc:
        raise DeployError(f"{exc}; the challenger keeps running") from None
    stop(settings, name, target, endpoint, who=who, actor=actor, log=log)
    return deploy(client, settings, name, slot.version, target, endpoint, who=who, actor=actor,
                  cause=f"promoted challenger v{slot.version}", log=log)  # fmt: skip
