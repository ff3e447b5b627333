"""The jobs a user runs. In-process execution: steps share one interpreter, so a small run is seconds, not
tens of seconds of per-step process start-up (see README for distributed executors)."""

import dagster as dg

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(include_sources=True),
    executor_def=dg.in_process_executor,
    description="Observe the raw data and materialize every stage with its checks.",
)
