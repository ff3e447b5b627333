"""Dagster wiring of the data stage: the raw CSV and the true outcomes of served decisions (ground_truth) as
observable sources, and the processed dataset: the raw file's rows and the labelled production rows."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import pandas as pd

from fin_behavior.data import quality
from fin_behavior.data.columns import TARGET
from fin_behavior.data.ingest import RawDataError
from fin_behavior.data.processing import (
    CODE_VERSION,
    DATASET_FILE,
    DataQualityError,
    add_labelled_rows,
    enforce_invalid_fraction,
    problem_counts,
    process_raw_file,
    publish_dataset,
    write_csv_atomic,
)
from fin_behavior.defs.checks import check_specs, evidence_results, lifecycle
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.resources import StorageResource
from fin_behavior.monitoring.labels import feedback_dir, label_files
from fin_behavior.settings import Settings, get_settings
from fin_behavior.storage.fingerprint import file_fingerprint


@dg.observable_source_asset(
    group_name="data",
    description="The raw banking CSV. Its data version is a sha256 of the content, recomputed only when "
    "size, mtime or inode change.",
)
def raw_transactions(storage: StorageResource) -> dg.ObserveResult:
    path = storage.ensure_raw_data()
    if not path.is_file():
        raise dg.Failure(f"raw data file not found: {path}. Set FIN_BEHAVIOR_RAW_DATA_PATH to your CSV.")
    return dg.ObserveResult(
        data_version=dg.DataVersion(file_fingerprint(path, storage.fingerprint_cache)[:16]),
        metadata={"path": dg.MetadataValue.path(str(path)), "size_bytes": path.stat().st_size},
    )


def ground_truth_dir(settings: Settings, storage: StorageResource) -> Path:
    return settings.ground_truth_dir or storage.root / "ground_truth"


def _label_sources(settings: Settings, storage: StorageResource) -> list[Path]:
    """The files labels come from: the feedback logs the colors write, and the ground-truth folder's files.
    Listing them reads no prediction log (that is collected from pods on Kubernetes): the local layout only."""
    from fin_behavior.deploy.deployer import prediction_log_home

    logs = feedback_dir(prediction_log_home(settings, storage.root))
    return [*(sorted(logs.glob("*.jsonl")) if logs.is_dir() else []), *label_files(ground_truth_dir(settings, storage))]


@dg.observable_source_asset(
    group_name="data",
    description="The true outcomes of served decisions: the feedback logs (POST /feedback) and the label files "
    "in the ground-truth folder (setting ground_truth_dir); its data version changes when a label arrives.",
)
def ground_truth(storage: StorageResource) -> dg.ObserveResult:
    files = _label_sources(get_settings(), storage)
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return dg.ObserveResult(
        data_version=dg.DataVersion(hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16] if stats else "none"),
        metadata={"files": len(files), "bytes": sum(size for _, size, _ in stats)},
    )


def production_rows(settings: Settings, storage: StorageResource) -> pd.DataFrame:
    """The served decisions whose true outcome came back, as training rows (none before the first label)."""
    from fin_behavior.deploy.deployer import prediction_log_dir
    from fin_behavior.monitoring.labels import read_labels
    from fin_behavior.monitoring.outcomes import join, labelled_rows

    log_dir = prediction_log_dir(settings, storage.root)
    labels = read_labels(log_dir, ground_truth_dir(settings, storage))
    if not labels:
        return pd.DataFrame()
    return labelled_rows(join(log_dir, labels, 0.0, 0.0, keep_requests=True))


class ProcessedDatasetConfig(SettingsConfig):
    target_quantile: float | None = setting("target_quantile")
    max_invalid_fraction: float | None = setting("max_invalid_fraction")
    min_rows: int | None = setting("min_rows")
    min_positive_rate: float | None = setting("min_positive_rate")
    max_positive_rate: float | None = setting("max_positive_rate")
    max_single_feature_auc: float | None = setting("max_single_feature_auc")


def _preview(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "_none_")


def _column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()])


@dg.asset(
    deps=[raw_transactions, ground_truth],
    group_name="data",
    code_version=CODE_VERSION,
    check_specs=check_specs(quality.STAGE, quality.CHECKS),
    description="Validated, feature-engineered rows with the HighAmount target, as Parquet, published as a "
    "version with the verdicts of its checks; only an approved version is used downstream. Invalid rows go to a "
    "quarantine CSV with a reason each; too many of them fail the run and keep the previous version.",
)
def processed_dataset(
    context: dg.AssetExecutionContext, config: ProcessedDatasetConfig, storage: StorageResource
) -> dg.MaterializeResult:
    settings = config.settings()
    quarantine_path = storage.quarantine_path(context.run.run_id)
    try:
        data = process_raw_file(storage.ensure_raw_data(), settings.target_quantile)
        if len(data.quarantine):
            write_csv_atomic(data.quarantine, quarantine_path)
            storage.publish_file(quarantine_path)
        enforce_invalid_fraction(data, settings.max_invalid_fraction, quarantine_path)
    except (RawDataError, DataQualityError, ValueError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    production = production_rows(settings, storage)
    dataset, left_out = add_labelled_rows(data.dataset, production)
    store = storage.versions(quality.STAGE)
    evidence = publish_dataset(dataset, store, settings, data)
    data_version, lifecycle_metadata = lifecycle(store, evidence)
    return dg.MaterializeResult(
        data_version=data_version,
        metadata=lifecycle_metadata
        | {
            "dagster/row_count": len(dataset),
            "dagster/column_schema": _column_schema(dataset),
            "path": dg.MetadataValue.path(str(store.path(evidence.version) / DATASET_FILE)),
            "raw_rows": data.total_rows,
            "labelled_production_rows": len(production) - left_out,
            "labelled_production_rows_left_out": left_out,
            "quarantined_rows": len(data.quarantine),
            "invalid_fraction": round(data.invalid_fraction, 6),
            "quarantine_path": dg.MetadataValue.path(str(quarantine_path)) if len(data.quarantine) else "none",
            "problems_by_column": dg.MetadataValue.json(problem_counts(data.quarantine)),
            "quarantine_sample": _preview(
                data.quarantine[["line", "reason"]] if len(data.quarantine) else data.quarantine
            ),
            "positive_rate": round(float(dataset[TARGET].mean()), 5),
            "preview": _preview(dataset),
        },
        check_results=evidence_results(quality.STAGE, evidence),
    )
