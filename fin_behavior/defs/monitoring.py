"""Dagster wiring of monitoring: the prediction log as an observable source, serving_quality over a rolling
window with its checks, alerts to a webhook, and the schedule that runs it."""

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

from fin_behavior.defs.checks import check_result
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.deployment import live_deployment
from fin_behavior.defs.executor import on_endpoint_host
from fin_behavior.defs.metadata import png_markdown
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.monitoring.quality import CHECKS, Quality
from fin_behavior.monitoring.window import log_files
from fin_behavior.settings import Settings, get_settings

STAGE = "serving_quality"


def prediction_logs(settings: Settings, storage: StorageResource) -> Path:
    from fin_behavior.deploy.deployer import prediction_log_dir

    return prediction_log_dir(settings, storage.root)


@dg.observable_source_asset(
    group_name="monitoring",
    op_tags=on_endpoint_host(),
    description="The prediction log every color of the endpoint writes; its data version changes as it grows.",
)
def serving_traffic(storage: StorageResource) -> dg.ObserveResult:
    files = log_files(prediction_logs(get_settings(), storage))
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    version = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
    return dg.ObserveResult(
        data_version=dg.DataVersion(version),
        metadata={"files": len(files), "bytes": sum(size for _, size, _ in stats)},
    )


class MonitorConfig(SettingsConfig):
    monitor_window_minutes: float | None = setting("monitor_window_minutes")
    max_latency_ms: float | None = setting("max_latency_ms")
    max_error_rate: float | None = setting("max_error_rate")
    min_monitor_rows: int | None = setting("min_monitor_rows")
    psi_warn: float | None = setting("psi_warn")
    psi_alert: float | None = setting("psi_alert")


def _table(qualities: dict[str, Quality], production: str | None) -> str:
    header = "| version | requests | rows | p50 ms | p95 ms | p99 ms | error rate | outcomes | unknown categories "
    header += "| platform probes |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for version, q in sorted(qualities.items()):
        f = q.figures
        mark = " (production)" if version == production else ""
        lines.append(
            f"| v{version}{mark} | {f['requests']} | {f['rows']} | {f['p50_ms']} | {f['p95_ms']} | {f['p99_ms']} | "
            f"{f['error_rate']:.2%} | {f['outcomes']} | {f['unknown_categories'] or '-'} | {f['probe_requests']} |"
        )
    return "\n".join(lines)


@dg.asset(
    deps=[serving_traffic, live_deployment],
    group_name="monitoring",
    op_tags=on_endpoint_host(),
    check_specs=[dg.AssetCheckSpec(name, asset=STAGE, description=description) for name, description in CHECKS.items()],
    description="The last monitor_window_minutes of the prediction log, per served version: traffic, latency "
    "percentiles, error rate by status, unknown categories, and PSI of every input and of the probabilities "
    "against the version's reference profile. Checks judge the production version; failures alert.",
)
def serving_quality(
    context: dg.AssetExecutionContext, config: MonitorConfig, storage: StorageResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    from mlflow import MlflowClient

    from fin_behavior.deploy.deployer import DeployError, endpoint_dir, fetch_release
    from fin_behavior.ml import registry
    from fin_behavior.monitoring import alerts, plots
    from fin_behavior.monitoring.evaluate import evaluate, judge_quiet
    from fin_behavior.monitoring.profile import read_profile

    settings = config.settings()
    client = MlflowClient(tracking_uri=mlflow.uri)
    name = settings.registered_model_name
    endpoint = endpoint_dir(settings, storage.root)

    def profile_of(version: str):
        try:
            return read_profile(fetch_release(client, name, version, endpoint / "releases").bundle)
        except (DeployError, OSError, ValueError) as exc:
            context.log.warning(f"no reference profile for v{version}: {exc}")
            return None

    window, qualities = evaluate(settings, prediction_logs(settings, storage), profile_of)
    production = registry.alias_version(client, name, registry.PRODUCTION)
    judged = qualities.get(production or "") or judge_quiet(production or "none", settings)
    results = [
        check_result(
            dg.AssetCheckKey(dg.AssetKey(STAGE), check),
            verdict.outcome,
            blocking=not verdict.warning,  # an alarm is ERROR severity, a warning WARN; nothing is blocked
        )
        for check, verdict in judged.checks.items()
    ]
    metadata: dict[str, Any] = {
        "window": f"last {settings.monitor_window_minutes:g} min: {window.describe()}",
        "probe_requests": window.probes,
        "production_version": production or "none",
        "by_version": dg.MetadataValue.md(_table(qualities, production)),
        "figures": dg.MetadataValue.json(judged.figures),
    }
    with tempfile.TemporaryDirectory() as tmp:
        pngs = [plots.latency_histogram(window, Path(tmp) / "latency.png", settings.max_latency_ms)]
        if judged.drift is not None:
            metadata["psi"] = dg.MetadataValue.json({k: round(v, 4) for k, v in judged.drift.features.items()})
            metadata["prediction_psi"] = round(judged.drift.probability, 4)
            pngs.append(
                plots.psi_bars(judged.drift.features, Path(tmp) / "psi.png", settings.psi_warn, settings.psi_alert)
            )
        metadata["plots"] = png_markdown(pngs)
    alarms = [
        alerts.Alert(check, judged.version, verdict.outcome, _run_url(context))
        for check, verdict in judged.failed.items()
        if not verdict.warning
    ]
    if alarms and settings.alert_webhook_url:
        sent = alerts.send(
            settings.alert_webhook_url,
            alarms,
            storage.root / "cache" / "alerts_sent.json",
            settings.monitor_window_minutes * 60,
            context.log.warning,
        )
        metadata["alerts_sent"] = ", ".join(sent) or "none (already sent within the window)"
    return dg.MaterializeResult(metadata=metadata, check_results=results)


def _run_url(context: dg.AssetExecutionContext) -> str:
    return f"http://127.0.0.1:3000/runs/{context.run.run_id}"  # `make dev`
