"""Dagster wiring of batch scoring: each file dropped in the inbox is a partition of `batch_scores`, added (and
its run requested) by `batch_inbox_sensor`; the asset scores it with the registered production version
(fin_behavior/batch.py)."""

import re
from pathlib import Path

import dagster as dg

from fin_behavior.batch import SUFFIXES, BatchError, score_file, version_worker
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.settings import get_settings

BATCH_FILES = "batch_files"
batch_files = dg.DynamicPartitionsDefinition(name=BATCH_FILES)
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")  # a file name that is a clean partition key
SETTLE_SECONDS = 2.0  # a file still being written is left for a later tick: copy into the inbox, then rename


class BatchConfig(SettingsConfig):
    batch_model_alias: str | None = setting("batch_model_alias")
    batch_chunk_rows: int | None = setting("batch_chunk_rows")


@dg.asset(
    partitions_def=batch_files,
    group_name="batch",
    description="One inbox file (CSV or Parquet, the Kaggle layout) scored by the registered production version: "
    "validated with the training schema (bad rows quarantined with their reasons), features derived by the one "
    "feature definition, scored in chunks by the version's bundle; scores.parquet (TransactionID, probability, "
    "decision, model_version, batch_id), quarantine.csv and summary.json in <batch_output_dir>/<file name>.",
)
def batch_scores(context: dg.AssetExecutionContext, config: BatchConfig) -> dg.MaterializeResult:
    settings = config.settings()
    name = context.partition_key
    source, out = settings.batch_inbox / name, settings.batch_scores_root / name
    step = max(1, settings.batch_chunk_rows * 10)

    def progress(done: int, total: int) -> None:
        if done % step < settings.batch_chunk_rows or done == total:
            context.log.info(f"{name}: {done:,} of {total:,} rows")

    try:
        worker, version = version_worker(settings, settings.batch_model_alias)
        with worker:
            summary = score_file(
                source, out, worker, version, f"{Path(name).stem}-{context.run.run_id[:8]}",
                settings.batch_chunk_rows, progress,
            )  # fmt: skip
    except BatchError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary.scored,
            "rows": summary.rows,
            "quarantined": summary.quarantined,
            "decision_rate": summary.decision_rate,
            "seconds": summary.seconds,
            "rows_per_second": summary.rows_per_second,
            "model_version": summary.model_version,
            "feature_definition": summary.feature_definition,
            "batch_id": summary.batch_id,
            "scores": dg.MetadataValue.path(summary.scores),
            "quarantine": dg.MetadataValue.path(summary.quarantine) if summary.quarantine else "none",
            "problems_by_column": dg.MetadataValue.json(summary.problems_by_column),
        }
    )


score_batch = dg.define_asset_job(
    "score_batch",
    selection=[batch_scores],
    partitions_def=batch_files,
    description="Score one inbox file (a batch_files partition) with the production version (batch_scores).",
)


def settled_files(inbox: Path, now: float) -> tuple[list[Path], list[str]]:
    """(files ready to score, names passed over with the reason)."""
    ready, passed = [], []
    for path in sorted(inbox.iterdir()) if inbox.is_dir() else []:
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in SUFFIXES:
            continue
        if not _KEY.match(path.name):
            passed.append(f"{path.name}: rename it to letters, digits, '.', '_' and '-' only")
        elif now - path.stat().st_mtime >= SETTLE_SECONDS:
            ready.append(path)
    return ready, passed


@dg.sensor(
    job=score_batch,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="A CSV or Parquet file in the batch inbox (batch_inbox_dir) becomes a batch_files partition and a "
    "score_batch run; a file replaced under the same name (other size or time) is scored again.",
)
def batch_inbox_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    import time

    ready, passed = settled_files(get_settings().batch_inbox, time.time())
    known = set(context.instance.get_dynamic_partitions(BATCH_FILES))
    new = [p.name for p in ready if p.name not in known]
    requests = [
        dg.RunRequest(partition_key=p.name, run_key=f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}")
        for p in ready
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batch_files.build_add_request(new)] if new else [],
        skip_reason=None if requests else ("; ".join(passed) or "no file in the inbox"),
    )
