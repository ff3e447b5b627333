"""The data stage through Dagster: observation, materialization, checks, and failure that loses nothing."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from fin_behavior.data.processing import DATASET_FILE
from fin_behavior.defs.dataset import ground_truth, processed_dataset, raw_transactions
from fin_behavior.defs.resources import StorageResource
from fin_behavior_tests.helpers import dagster_instance

ASSETS = [raw_transactions, ground_truth, processed_dataset]


def _run(instance, storage, **config):
    run_config = {"ops": {"processed_dataset": {"config": config}}} if config else None
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources={"storage": storage},
        run_config=run_config,
        raise_on_error=False,
        selection=dg.AssetSelection.all(include_sources=True),
    )


def _current(storage: StorageResource):
    return storage.versions("processed_dataset").current() / DATASET_FILE


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def instance():
    with dagster_instance() as inst:
        yield inst


def test_default_data_is_generated_observed_processed_and_checked(instance, isolated_settings):
    storage = StorageResource()
    result = _run(instance, storage)
    assert result.success
    assert (isolated_settings / "data" / "transactions.csv").exists()  # created on first use

    event = instance.get_latest_materialization_event(dg.AssetKey("processed_dataset")).asset_materialization
    observation = instance.get_latest_data_version_record(dg.AssetKey("raw_transactions")).asset_observation
    raw_version = observation.tags["dagster/data_version"]
    assert event.tags["dagster/input_data_version/raw_transactions"] == raw_version
    assert observation.metadata["size_bytes"].value == (isolated_settings / "data" / "transactions.csv").stat().st_size
    assert event.tags["dagster/code_version"] == "processed-v3"
    assert event.metadata["dagster/row_count"].value == 5_000
    assert event.metadata["quarantined_rows"].value == 0
    assert event.metadata["approved"].value is True
    assert event.metadata["current_version"].value == event.metadata["attempt_version"].value
    assert event.tags["dagster/data_version"] == event.metadata["current_version"].value
    assert {c.name for c in event.metadata["dagster/column_schema"].schema.columns} >= {"age", "HighAmount"}
    assert pd.read_parquet(_current(storage))["HighAmount"].mean() == pytest.approx(0.05, abs=0.002)

    checks = _checks(result)
    assert set(checks) == {
        "schema_conformance",
        "min_row_count",
        "positive_rate_in_band",
        "unique_transaction_ids",
        "no_target_leakage",
    }
    assert all(c.passed for c in checks.values())
    assert checks["min_row_count"].metadata["actual"].value == 5_000
    assert checks["min_row_count"].metadata["threshold"].value == "1000"


def test_unchanged_data_keeps_the_same_versions(instance):
    storage = StorageResource()
    _run(instance, storage)
    first = instance.get_latest_materialization_event(dg.AssetKey("processed_dataset")).asset_materialization
    _run(instance, storage)
    second = instance.get_latest_materialization_event(dg.AssetKey("processed_dataset")).asset_materialization
    assert first.tags["dagster/data_version"] == second.tags["dagster/data_version"]


def test_bad_file_fails_clearly_and_keeps_the_previous_dataset(instance, tmp_path, banking_csv):
    good = StorageResource(raw_data_path=str(banking_csv))
    assert _run(instance, good).success
    before = _current(good).read_bytes()

    frame = pd.read_csv(banking_csv, dtype=str)
    frame.loc[:99, "Transaction Date"] = "not a date"  # 2% invalid, above the 1% default
    bad_path = tmp_path / "bad.csv"
    frame.to_csv(bad_path, index=False)
    bad = StorageResource(raw_data_path=str(bad_path))
    result = _run(instance, bad)

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert "100 of 5000 rows (2.00%)" in message and "Transaction Date (100 rows)" in message
    assert "max_invalid_fraction" in message
    assert _current(good).read_bytes() == before  # untouched
    quarantine = pd.read_csv(next(good.versions("processed_dataset").root.glob("quarantine/*.csv")))
    assert len(quarantine) == 100 and quarantine["reason"].str.contains("cannot parse 'not a date'").all()

    relaxed = _run(instance, bad, max_invalid_fraction=0.05)  # the setting the message names works
    assert relaxed.success
    assert len(pd.read_parquet(_current(bad))) == 4_900


def test_unusable_file_is_a_clear_failure(instance, tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("Age;Gender\n40;Male\n")
    result = _run(instance, StorageResource(raw_data_path=str(path)))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "uses semicolon" in failure.step_failure_data.error.message


def test_leaking_column_fails_the_blocking_leakage_check_and_is_never_current(instance, tmp_path, banking_csv):
    good = StorageResource(raw_data_path=str(banking_csv))
    assert _run(instance, good).success
    approved = good.versions("processed_dataset").current_version()

    frame = pd.read_csv(banking_csv, dtype=str)
    # A column that is really the amount in disguise, as in the seeds' model.
    frame["Account Balance"] = frame["Transaction Amount"]
    path = tmp_path / "leaky.csv"
    frame.to_csv(path, index=False)
    leaky = StorageResource(raw_data_path=str(path))
    result = _run(instance, leaky)
    assert not result.success  # the blocking check fails the step, so nothing downstream runs
    leak = _checks(result)["no_target_leakage"]
    assert not leak.passed and "'account_balance'" in leak.description
    assert leak.metadata["actual"].value >= 0.95
    assert leak.severity == dg.AssetCheckSeverity.ERROR

    store = leaky.versions("processed_dataset")
    assert store.current_version() == approved  # the leaky version is kept, inspectable, but not current
    event = instance.get_latest_materialization_event(dg.AssetKey("processed_dataset")).asset_materialization
    assert event.metadata["approved"].value is False and event.metadata["current_version"].value == approved
    assert event.tags["dagster/data_version"] == approved  # downstream stays fresh: it keeps the approved rows
    assert "no_target_leakage" in event.metadata["verdict"].value
