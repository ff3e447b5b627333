"""Dagster wiring of outcomes: the labels as an observable source (`ground_truth`), `realized_performance` per
served version with its checks, and the sensor that retrains when the production version's realized figures
fall. The join and the figures are domain code (fin_behavior/monitoring/labels.py, outcomes.py, realized.py)."""

import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

from fin_behavior.defs.checks import check_result
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.dataset import ground_truth, ground_truth_dir
from fin_behavior.defs.executor import on_endpoint_host
from fin_behavior.defs.metadata import png_markdown
from fin_behavior.defs.monitoring import _run_url, prediction_logs, serving_quality, serving_traffic
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.monitoring.realized import CHECKS, Realized
from fin_behavior.settings import Settings

STAGE = "realized_performance"


class OutcomeConfig(SettingsConfig):
    outcome_window_hours: float | None = setting("outcome_window_hours")
    label_delay_hours: float | None = setting("label_delay_hours")
    min_labelled_rows: int | None = setting("min_labelled_rows")
    min_label_coverage: float | None = setting("min_label_coverage")
    realized_tolerance: float | None = setting("realized_tolerance")


def version_figures(client, settings: Settings, storage: StorageResource, log):
    """version -> (decision threshold, validation metrics) of a registered version, or None when unreadable."""
    from fin_behavior.deploy.deployer import DeployError, endpoint_dir, fetch_release
    from fin_behavior.records import ModelInfo, TrainingRecord

    def figures(version: str) -> tuple[float, dict[str, float]] | None:
        releases = endpoint_dir(settings, storage.root) / "releases"
        try:
            info = ModelInfo.read(fetch_release(client, settings.registered_model_name, version, releases).bundle)
        except (DeployError, OSError, ValueError) as exc:
            log(f"v{version}: no bundle to judge it by: {exc}")
            return None
        trained = storage.versions("trained_model")
        metrics: dict[str, float] = {}
        if trained.published(info.trained_model_version):
            metrics = TrainingRecord.read(trained.path(info.trained_model_version)).metrics
        return info.decision_threshold, metrics

    return figures


def _table(results: dict[str, Realized], production: str | None) -> str:
    lines = [
        "| version | decisions | labelled | coverage | ROC-AUC (validation) | precision (validation) | "
        "recall (validation) | Brier | ECE | estimated ROC-AUC / precision (pending rows) |",
        "|---|---:|---:|---:|---|---|---|---:|---:|---|",
    ]

    def pair(r: Realized, metric: str) -> str:
        actual, validated = r.figures.get(metric), r.validation.get(metric)
        return ("-" if actual is None else f"{actual:.4f}") + ("" if validated is None else f" ({validated:.4f})")

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for version, r in sorted(results.items()):
        f, e = r.figures, r.estimate
        mark = " (production)" if version == production else ""
        estimated = f"{e['roc_auc']:.4f} / {e['precision']:.4f} ({e['rows']})" if e.get("rows") else "-"
        lines.append(
            f"| v{version}{mark} | {f['decisions']} | {f['labelled']} | {f['coverage']:.1%} | {pair(r, 'roc_auc')} | "
            f"{pair(r, 'precision')} | {pair(r, 'recall')} | {number(f.get('brier'))} | {number(f.get('ece'))} | "
            f"{estimated} |"
        )
    return "\n".join(lines)


@dg.asset(
    # after serving_quality: its window is the last minutes, so it goes first and is not held up by this join
    deps=[ground_truth, serving_traffic, serving_quality, "live_deployment"],
    group_name="monitoring",
    op_tags=on_endpoint_host(),
    check_specs=[dg.AssetCheckSpec(name, asset=STAGE, description=description) for name, description in CHECKS.items()],
    description="Served decisions joined to their true outcomes by request id, per served version, over "
    "outcome_window_hours of prediction time ending label_delay_hours ago: coverage, ROC-AUC, precision and recall "
    "at the version's threshold, Brier score and ECE, each next to the version's validation figure; a label-free "
    "estimate for the decisions whose labels are not in yet. Checks judge the production version; a failure alerts, "
    "and the performance_decay_sensor retrains.",
)
def realized_performance(
    context: dg.AssetExecutionContext, config: OutcomeConfig, storage: StorageResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    from mlflow import MlflowClient

    from fin_behavior.ml import registry
    from fin_behavior.monitoring import alerts, plots
    from fin_behavior.monitoring.realized import evaluate

    settings = config.settings()
    client = MlflowClient(tracking_uri=mlflow.uri)
    production = registry.alias_version(client, settings.registered_model_name, registry.PRODUCTION)
    window = evaluate(
        settings,
        prediction_logs(settings, storage),
        ground_truth_dir(settings, storage),
        version_figures(client, settings, storage, context.log.warning),
    )
    judged = window.results.get(production or "")
    if judged is None:
        judged = window.quiet(production or "none", settings)
    results = [
        # too few labels warns (WARN); a realized figure below its bar alarms (ERROR); nothing is blocked
        check_result(dg.AssetCheckKey(dg.AssetKey(STAGE), check), outcome, blocking=check != "label_coverage")
        for check, outcome in judged.checks.items()
    ]
    decayed = [name for name in ("realized_roc_auc", "realized_recall") if name in judged.failed]
    metadata: dict[str, Any] = {
        "window": window.describe(),
        "window_key": window.key(judged.version),
        "production_version": production or "none",
        "decayed": ", ".join(decayed) or "no",
        "labels": dg.MetadataValue.json(window.label_counts),
        "by_version": dg.MetadataValue.md(_table(window.results, production)),
        "figures": dg.MetadataValue.json(judged.figures | {"validation": judged.validation}),
        "estimate": dg.MetadataValue.json(judged.estimate),
    }
    with tempfile.TemporaryDirectory() as tmp:
        pngs = []
        if judged.timeline:
            pngs.append(
                plots.realized_over_time(
                    judged.timeline, judged.validation.get("roc_auc"), settings.realized_tolerance, Path(tmp) / "t.png"
                )
            )
        if "bins" in judged.figures:
            pngs.append(plots.reliability(judged.figures["bins"], Path(tmp) / "calibration.png"))
        if pngs:
            metadata["plots"] = png_markdown(pngs)
    if decayed and settings.alert_webhook_url:
        sent = alerts.send(
            settings.alert_webhook_url,
            [alerts.Alert(c, judged.version, judged.checks[c], _run_url(context)) for c in decayed],
            storage.root / "cache" / "alerts_sent.json",
            settings.outcome_window_hours * 3600,
            context.log.warning,
        )
        metadata["alerts_sent"] = ", ".join(sent) or "none (already sent within the window)"
    return dg.MaterializeResult(metadata=metadata, check_results=results)
