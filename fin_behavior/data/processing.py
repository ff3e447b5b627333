"""The processed_dataset stage as plain functions: raw file -> (processed rows, quarantined rows)."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fin_behavior.data import quality
from fin_behavior.data.columns import KEY, TARGET, TRANSACTION_ID
from fin_behavior.data.features import build_features
from fin_behavior.data.ingest import parse_raw, read_raw_csv
from fin_behavior.records import DataRecord, Evidence
from fin_behavior.serving.features import DATE_INPUTS, DIRECT
from fin_behavior.settings import Settings
from fin_behavior.storage.atomic import write_atomic
from fin_behavior.storage.store import VersionStore

CODE_VERSION = "processed-v3"  # v3: the raw inputs of each row published beside the features
DATASET_FILE = "processed_dataset.parquet"
RAW_INPUTS_FILE = "raw_inputs.parquet"  # KEY + the raw input columns (serving/features.py INPUTS) of each row


class DataQualityError(ValueError):
    """Too much of the raw file is invalid to train on; the message names the problems and the setting."""


@dataclass(frozen=True)
class ProcessedData:
    dataset: pd.DataFrame
    quarantine: pd.DataFrame
    total_rows: int
    # each processed row's inputs as the bank's record holds them (numbers typed, dates as the file wrote them):
    # the bundle's raw parity records are taken from it (environments/compatible.py)
    raw_inputs: pd.DataFrame | None = None

    @property
    def invalid_fraction(self) -> float:
        return len(self.quarantine) / self.total_rows


def process_raw_file(path: str | os.PathLike[str], target_quantile: float) -> ProcessedData:
    text = read_raw_csv(path)
    parsed = parse_raw(text)
    dataset = build_features(parsed.valid, target_quantile) if len(parsed.valid) else pd.DataFrame()
    return ProcessedData(dataset, parsed.quarantine, parsed.total_rows, raw_inputs_of(parsed.valid, text))


def raw_inputs_of(valid: pd.DataFrame, text: pd.DataFrame) -> pd.DataFrame:
    raw = valid[[*DIRECT]].copy()
    for name in DATE_INPUTS:
        raw[name] = text.loc[valid.index, name].str.strip()
    raw.insert(0, KEY, valid[TRANSACTION_ID].astype(str))
    return raw.reset_index(drop=True)


def problem_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    """Rows with a problem, per column, most frequent first."""
    counts: Counter[str] = Counter()
    for reason in quarantine.get("reason", []):
        counts.update({part.split(":", 1)[0] for part in reason.split("; ")})
    return dict(counts.most_common())


def enforce_invalid_fraction(data: ProcessedData, max_invalid_fraction: float, quarantine_path: Path) -> None:
    bad = len(data.quarantine)
    if bad == 0 or (data.invalid_fraction <= max_invalid_fraction and len(data.dataset)):
        return
    columns = ", ".join(f"{col} ({n} rows)" for col, n in list(problem_counts(data.quarantine).items())[:6])
    lines = ", ".join(str(n) for n in data.quarantine["line"].head(10))
    limit = (
        "no valid rows remain"
        if not len(data.dataset)
        else (f"more than max_invalid_fraction={max_invalid_fraction:.2%}")
    )
    raise DataQualityError(
        f"{bad} of {data.total_rows} rows ({data.invalid_fraction:.2%}) failed validation, {limit}. "
        f"Problems by column: {columns}. First bad lines: "
        f"{lines}. Each rejected row and its reason: {quarantine_path}. Fix the file, or allow more with run "
        "config `ops: processed_dataset: config: max_invalid_fraction` or FIN_BEHAVIOR_MAX_INVALID_FRACTION. "
        "The previous processed_dataset was left untouched."
    )


def dataset_version(dataset: pd.DataFrame, judged_by: str = "") -> str:
    """Content hash (and what the content is judged by: code and check thresholds): the same rows judged the
    same way are the same version, so unchanged data keeps children fresh."""
    digest = hashlib.sha256("\x1f".join(map(str, dataset.columns)).encode())
    digest.update(pd.util.hash_pandas_object(dataset, index=False).to_numpy().tobytes())
    digest.update(judged_by.encode())
    return digest.hexdigest()[:16]


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def publish_dataset(
    dataset: pd.DataFrame, store: VersionStore, settings: Settings, processed: ProcessedData | None = None
) -> Evidence:
    """Judge the processed rows and publish them as a version with that evidence (once: the same rows judged
    by the same checks are the same version), with `processed`'s account of the raw file (data.json, read by the
    model risk report). Only an approved version becomes current."""
    judged_by = [CODE_VERSION, *(getattr(settings, name) for name in quality.THRESHOLDS)]
    version = dataset_version(dataset, json.dumps(judged_by))
    if store.published(version):
        return store.reuse(version)
    evidence = quality.judge(dataset, version, settings)
    staging = store.staging(version)
    dataset.to_parquet(staging / DATASET_FILE, index=False)
    if processed is not None and processed.raw_inputs is not None:
        processed.raw_inputs.to_parquet(staging / RAW_INPUTS_FILE, index=False)
    if processed is not None:
        DataRecord(
            raw_rows=processed.total_rows,
            rows=len(dataset),
            quarantined_rows=len(processed.quarantine),
            problems_by_column=problem_counts(processed.quarantine),
            target=TARGET,
            target_definition=f"{TARGET} = 1 when the transaction amount is at or above its "
            f"{settings.target_quantile:.0%} quantile in the file (the amount itself is not a feature)",
            positive_rate=round(float(dataset[TARGET].mean()), 6) if len(dataset) else 0.0,
        ).write(staging)
    store.publish(staging, evidence)
    return evidence


def read_dataset(store: VersionStore, version: str | None = None) -> tuple[str, pd.DataFrame]:
    """(version, rows) of an approved dataset version: the current one unless `version` is named."""
    version = version or store.current_version()
    return version, pd.read_parquet(store.approved(version) / DATASET_FILE)


def read_raw_inputs(store: VersionStore, version: str) -> pd.DataFrame | None:
    """The raw inputs of an approved dataset version's rows; None for a version published before v3."""
    path = store.approved(version) / RAW_INPUTS_FILE
    return pd.read_parquet(path) if path.is_file() else None


def add_labelled_rows(dataset: pd.DataFrame, labelled: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The processed rows with the labelled production rows after them (fin_behavior/monitoring/outcomes.py), and
    how many of those were left out: a row that does not match the ProcessedDataset schema (a category never in
    the vocabulary, an age out of range) would fail the dataset's checks for everyone, so it is dropped and
    counted instead."""
    import pandera.errors

    from fin_behavior.data.schemas import ProcessedDataset

    if not len(labelled):
        return dataset, 0
    try:
        ProcessedDataset.validate(labelled, lazy=True)
        kept = labelled
    except pandera.errors.SchemaErrors as exc:
        bad = exc.failure_cases["index"].dropna().unique()
        kept = labelled.drop(index=[i for i in bad if i in labelled.index])
    return pd.concat([dataset, kept], ignore_index=True), len(labelled) - len(kept)
