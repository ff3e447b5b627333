"""Dagster wiring of the data stage: the raw CSV as an observable source and the processed dataset."""

import dagster as dg
import pandas as pd

from fin_behavior.data import quality
from fin_behavior.data.columns import TARGET
from fin_behavior.data.fingerprint import file_fingerprint
from fin_behavior.data.ingest import RawDataError
from fin_behavior.data.processing import (
    DataQualityError,
    dataset_version,
    enforce_invalid_fraction,
    problem_counts,
    process_raw_file,
    write_csv_atomic,
    write_parquet_atomic,
)
from fin_behavior.defs.checks import check_result, check_specs
from fin_behavior.defs.resources import StorageResource
from fin_behavior.settings import get_settings

PROCESSED_CODE_VERSION = "processed-v1"
_settings = get_settings()


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


class ProcessedDatasetConfig(dg.Config):
    target_quantile: float = _settings.target_quantile
    max_invalid_fraction: float = _settings.max_invalid_fraction


def _preview(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "_none_")


def _column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()])


_CHECKS = {
    "schema_conformance": (True, "Processed rows match the ProcessedDataset pandera schema."),
    "min_row_count": (False, "Enough rows to train on (setting min_rows)."),
    "positive_rate_in_band": (False, f"{TARGET} rate within the sane band."),
    "unique_transaction_ids": (False, "No duplicate transaction IDs."),
    "no_target_leakage": (True, f"No single feature predicts {TARGET} with ROC-AUC >= max_single_feature_auc."),
}


@dg.asset(
    deps=[raw_transactions],
    group_name="data",
    code_version=PROCESSED_CODE_VERSION,
    description="Validated, feature-engineered rows with the HighAmount target, as Parquet. Invalid rows go "
    "to a quarantine CSV with a reason each; too many of them fail the run and keep the previous version.",
)
def processed_dataset(
    context: dg.AssetExecutionContext, config: ProcessedDatasetConfig, storage: StorageResource
) -> dg.MaterializeResult:
    quarantine_path = storage.quarantine_path(context.run.run_id)
    try:
        data = process_raw_file(storage.ensure_raw_data(), config.target_quantile)
        if len(data.quarantine):
            write_csv_atomic(data.quarantine, quarantine_path)
            storage.publish_file(quarantine_path)
        enforce_invalid_fraction(data, config.max_invalid_fraction, quarantine_path)
    except (RawDataError, DataQualityError, ValueError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    write_parquet_atomic(data.dataset, storage.processed_path)
    storage.publish_file(storage.processed_path)
    version = dataset_version(data.dataset)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": len(data.dataset),
            "dagster/column_schema": _column_schema(data.dataset),
            "path": dg.MetadataValue.path(str(storage.processed_path)),
            "data_version": version,
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
    )


@dg.multi_asset_check(specs=check_specs(processed_dataset, _CHECKS), can_subset=True)
def processed_dataset_checks(context: dg.AssetCheckExecutionContext, storage: StorageResource):
    settings = get_settings()
    dataset = pd.read_parquet(storage.fetch_file(storage.processed_path))
    outcomes = {
        "schema_conformance": lambda: quality.schema_conformance(dataset),
        "min_row_count": lambda: quality.min_rows(dataset, settings.min_rows),
        "positive_rate_in_band": lambda: quality.positive_rate(
            dataset, settings.min_positive_rate, settings.max_positive_rate
        ),
        "unique_transaction_ids": lambda: quality.duplicate_ids(dataset),
        "no_target_leakage": lambda: quality.target_leakage(dataset, settings.max_single_feature_auc),
    }
    for key in context.selected_asset_check_keys:
        yield check_result(key, outcomes[key.name](), blocking=_CHECKS[key.name][0])
