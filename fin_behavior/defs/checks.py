"""Turning domain `Outcome`s into asset check results the UI shows as actual vs threshold."""

import dagster as dg

from fin_behavior.outcome import Outcome


def check_result(key: dg.AssetCheckKey, outcome: Outcome, blocking: bool) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=key.name,
        asset_key=key.asset_key,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        description=outcome.message,
        metadata={"actual": outcome.actual, "threshold": str(outcome.threshold)},
    )


def check_specs(asset, checks: dict[str, tuple[bool, str]]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description)
        for name, (blocking, description) in checks.items()
    ]
