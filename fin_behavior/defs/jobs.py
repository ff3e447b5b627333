"""The jobs a user runs. How their steps execute is set once on the Definitions (fin_behavior/defs/executor.py):
in process by default, so a small run takes seconds, not tens of seconds of per-step imports; on Celery workers
with FIN_BEHAVIOR_EXECUTOR=celery."""

import dagster as dg

from fin_behavior.defs.compatible import serving_environment, training_environment
from fin_behavior.defs.dataset import ground_truth, processed_dataset, raw_transactions
from fin_behavior.defs.deployment import live_deployment
from fin_behavior.defs.monitoring import serving_quality, serving_traffic

# Monitoring watches what serves on its own schedule, submissions run one by one, when submitted, and batch files
# when they arrive: the platform's building jobs end at its deployment.
RUN_ON_THEIR_OWN = dg.AssetSelection.groups("monitoring", "submissions", "image", "batch", include_sources=True)

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(include_sources=True) - RUN_ON_THEIR_OWN,
    description="Observe the raw data, the labels and both environments, then materialize every stage with its checks.",
)

retrain = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(
        raw_transactions.key, ground_truth.key, training_environment.key, serving_environment.key
    )
    | dg.AssetSelection.assets(processed_dataset).downstream() - RUN_ON_THEIR_OWN,
    description="Observe the inputs (raw data, labels, environments), then rebuild from processed_dataset onward (what "
    "the data and decay sensors run).",
)

rebuild_compatible = dg.define_asset_job(
    "rebuild_compatible",
    selection=dg.AssetSelection.assets(training_environment.key, serving_environment.key)
    | dg.AssetSelection.assets("compatible_model").downstream() - RUN_ON_THEIR_OWN,
    description="Rebuild the serving bundle and everything after it for a changed serving environment.",
)

deploy = dg.define_asset_job(
    "deploy",
    selection=dg.AssetSelection.assets(live_deployment),
    description="Put a registered version in service through the gates, with no training: the `candidate` by "
    "default; set ops.live_deployment.config.release to an alias or a version number.",
)

rollback = dg.define_asset_job(
    "rollback",
    selection=dg.AssetSelection.assets(live_deployment),
    config={"ops": {"live_deployment": {"config": {"release": "previous"}}}},
    description="Put the `previous` version back in service through the same gates.",
)

monitor = dg.define_asset_job(
    "monitor",
    selection=dg.AssetSelection.assets(serving_traffic.key, ground_truth.key, serving_quality, "realized_performance"),
    description="Observe the prediction log and the labels, judge the last window of what serves (serving_quality) "
    "and how its decisions turned out (realized_performance).",
)

compare_challenger = dg.define_asset_job(
    "compare_challenger",
    selection=dg.AssetSelection.assets(serving_traffic.key, ground_truth.key, "challenger_comparison"),
    description="Observe the prediction log and the labels, then compare a challenger with the champion "
    "(challenger_comparison; ops.challenger_comparison.config champion / challenger: production vs candidate).",
)
