"""Evidence as Dagster sees it: check specs declared on an asset, the verdicts published with a version as
check results (actual vs threshold in the UI), and metadata that says which version is current and why."""

import dagster as dg

from fin_behavior.outcome import Outcome
from fin_behavior.records import Evidence
from fin_behavior.storage.store import VersionStore


def check_specs(asset: str | dg.AssetsDefinition, checks: dict[str, tuple[bool, str]]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description)
        for name, (blocking, description) in checks.items()
    ]


def check_result(key: dg.AssetCheckKey, outcome: Outcome, blocking: bool) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=key.name,
        asset_key=key.asset_key,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        description=outcome.message,
        metadata={"actual": outcome.actual, "threshold": str(outcome.threshold)},
    )


def evidence_results(asset: str, evidence: Evidence) -> list[dg.AssetCheckResult]:
    """The verdicts published with the version, one check result each; a failed blocking one stops the run."""
    return [
        check_result(
            dg.AssetCheckKey(dg.AssetKey(asset), v.check),
            Outcome(v.passed, v.actual, v.threshold, v.message),
            v.blocking,
        )
        for v in evidence.verdicts
    ]


def lifecycle(store: VersionStore, evidence: Evidence) -> tuple[dg.DataVersion, dict]:
    """The asset's data version is its *current* (last approved) version, so a failed attempt leaves everything
    downstream fresh; the metadata shows the attempt and the version in use side by side."""
    current = store.approved_version() or "none"
    metadata = {
        "approved": evidence.approved,
        "attempt_version": evidence.version,
        "current_version": current,
        "verdict": evidence.summary()[:2_000],
    }
    return dg.DataVersion(current), metadata
