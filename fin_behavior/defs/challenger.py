"""Dagster wiring of champion and challenger: `challenger_comparison` over a window of the prediction log and the
labels, and its non-blocking `challenger_verdict` check. The figures and the verdict are domain code
(fin_behavior/monitoring/challenger.py)."""

import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from fin_behavior.defs.checks import check_result
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.dataset import ground_truth, ground_truth_dir
from fin_behavior.defs.executor import on_endpoint_host
from fin_behavior.defs.metadata import png_markdown
from fin_behavior.defs.monitoring import prediction_logs, serving_traffic
from fin_behavior.defs.outcomes import version_figures
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.monitoring.challenger import CHECK

STAGE = "challenger_comparison"


class ChallengerConfig(SettingsConfig):
    champion: str = Field(default="production", description="The version in service: an alias or a version number")
    challenger: str = Field(default="candidate", description="The version compared with it: an alias or a number")
    registered_model_name: str | None = setting("registered_model_name")
    challenger_window_hours: float | None = setting("challenger_window_hours")
    challenger_alpha: float | None = setting("challenger_alpha")
    challenger_early_alpha: float | None = setting("challenger_early_alpha")
    challenger_min_gain: float | None = setting("challenger_min_gain")
    challenger_power: float | None = setting("challenger_power")
    challenger_bootstrap_samples: int | None = setting("challenger_bootstrap_samples")
    min_labelled_rows: int | None = setting("min_labelled_rows")
    challenger_min_class_rows: int | None = setting("challenger_min_class_rows")


@dg.asset(
    deps=[ground_truth, serving_traffic],
    group_name="monitoring",
    op_tags=on_endpoint_host(),
    check_specs=[
        dg.AssetCheckSpec(
            CHECK,
            asset=STAGE,
            blocking=False,
            description="States the verdict at challenger_alpha: challenger better, no difference detected, not "
            "enough data yet (about N more labelled rows), or challenger worse (the one that fails, as a warning).",
        )
    ],
    description="Champion against challenger over challenger_window_hours of the prediction log: agreement of "
    "their decisions, PSI between their probabilities, latency p95 and error rate of each; on labelled decisions "
    "both scored, the ROC-AUC and recall differences with paired bootstrap intervals and a verdict (DeLong's paired "
    "test of the ROC-AUC difference at challenger_alpha once there are the rows needed).",
)
def challenger_comparison(
    context: dg.AssetExecutionContext, config: ChallengerConfig, storage: StorageResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    from mlflow import MlflowClient

    from fin_behavior.deploy.challengers import latest_experiment
    from fin_behavior.deploy.deployer import DeployError, resolve_version
    from fin_behavior.monitoring import plots
    from fin_behavior.monitoring.challenger import PAIRED, SPLIT, Rule, compare, read_pairs
    from fin_behavior.monitoring.labels import read_labels
    from fin_behavior.monitoring.window import read_window

    settings = config.settings()
    client = MlflowClient(tracking_uri=mlflow.uri)
    try:
        champion, challenger = (
            resolve_version(client, settings.registered_model_name, ref) for ref in (config.champion, config.challenger)
        )
    except DeployError as exc:
        raise dg.Failure(f"challenger_comparison: {exc}", allow_retries=False) from None
    if champion == challenger:
        raise dg.Failure(
            f"challenger_comparison: champion {config.champion!r} and challenger {config.challenger!r} are both "
            f"v{champion}; name two different versions (an alias or a version number each)",
            allow_retries=False,
        )
    figures_of = version_figures(client, settings, storage, context.log.warning)
    thresholds = []
    for version in (champion, challenger):
        known = figures_of(version)
        if known is None:
            raise dg.Failure(f"challenger_comparison: v{version} has no readable bundle (see the log above)")
        thresholds.append(known[0])
    log_dir, until = prediction_logs(settings, storage), time.time()
    since = until - settings.challenger_window_hours * 3600
    design = None
    if recorded := latest_experiment(settings, settings.registered_model_name, champion, challenger):
        design = PAIRED if recorded.mode == "shadow" else SPLIT
        since = max(since, recorded.started)  # what this experiment decided: no earlier one, nothing after it
        until = min(until, recorded.ended or until)
    labels = read_labels(log_dir, ground_truth_dir(settings, storage))
    pairs = read_pairs(log_dir, champion, challenger, labels, since, until)
    window = read_window(log_dir, since, until, max_sampled=1)
    result = compare(
        pairs,
        window,
        champion,
        challenger,
        (thresholds[0], thresholds[1]),
        Rule.of(settings),
        design=design,
    )
    metadata: dict[str, Any] = {
        "champion_version": champion,
        "challenger_version": challenger,
        "verdict": result.verdict.verdict,
        "more_labelled_rows": result.verdict.more_rows,
        "message": result.verdict.message,
        "figures": dg.MetadataValue.json(result.figures),
    }
    if len(result.differences):
        intervals = {
            "DeLong (the verdict's)": result.figures["roc_auc_difference_interval"],
            "bootstrap": result.figures["roc_auc_difference_bootstrap_interval"],
        }
        with tempfile.TemporaryDirectory() as tmp:
            png = plots.challenger_differences(result.differences, intervals, Path(tmp) / "differences.png")
            metadata["plot"] = png_markdown([png])
    check = check_result(dg.AssetCheckKey(dg.AssetKey(STAGE), CHECK), result.outcome(), blocking=False)
    return dg.MaterializeResult(metadata=metadata, check_results=[check])
