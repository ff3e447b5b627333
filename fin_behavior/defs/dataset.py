"""Dagster wiring of the data stage: the raw CSV as an observable source and the processed dataset."""

import dagster as dg
import pandas as pd

from fin_behavior.data import quality
from fin_behavior.data.columns import TARGET
from fin_behavior.data.ingest import RawDataError
from fin_behavior.data.processing import (
    CODE_VERSION,
    DATASET_FILE,
    DataQualityError,
    enforce_invalid_fraction,
    problem_counts,
    process_raw_file,
    publish_dataset,
    write_csv_atomic,
)
from fin_behavior.defs.checks import check_specs, evidence_results, lifecycle
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.resources import StorageResource
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
    deps=[raw_transactions],
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
    store = storage.versions(quality.STAGE)
    evidence = publish_dataset(data.dataset, store, settings, data)
    data_version, lifecycle_metadata = lifecycle(store, evidence)
    return dg.MaterializeResult(
        data_version=data_version,
        metadata=lifecycle_metadata
        | {
            "dagster/row_count": len(data.dataset),
            "dagster/column_schema": _column_schema(data.dataset),
            "path": dg.MetadataValue.path(str(store.path(evidence.version) / DATASET_FILE)),
            "raw_rows": data.total_rows,
            "quarantined_rows": len(data.quarantine),
            "invalid_fraction": round(data.invalid_fraction, 6),
            "quarantine_path": dg.MetadataValue.path(str(quarantine_path)) if len(data.quarantine) else "none",
            "problems_by_column": dg.MetadataValue.json(problem_counts(data.quarantine)),
            "quarantine_sample": _preview(
                data.quarantine[["line", "reason"]] if len(data.quarantine) else data.quarantine
            ),
            "positive_rate": round(float(data.dataset[TARGET].mean()), 5),
            "preview": _preview(data.dataset),
        },
        check_results=evidence_results(quality.STAGE, evidence),
    )
