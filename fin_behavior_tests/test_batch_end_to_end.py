"""Batch scoring on the whole platform: full_pipeline registers and serves v1; a file dropped in the inbox becomes
a batch_files partition through the sensor, the score_batch job scores it with the production version, and the
command line does the same; every row agrees with what the live URL answers for it."""

from __future__ import annotations

import os
import time

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pytest

from fin_behavior.batch import QUARANTINE_FILE, SCORES_FILE
from fin_behavior.cli import main
from fin_behavior.data.generate import generate_csv
from fin_behavior.definitions import defs
from fin_behavior.defs.batch import BATCH_FILES, batch_inbox_sensor
from fin_behavior.records import BatchSummary
from fin_behavior.settings import get_settings
from fin_behavior_tests.e2e import FAST, failure_message

ROWS = 1_500


def _drop(name: str, text: pd.DataFrame) -> None:
    """Into the inbox as a user should: written beside it, then moved in; aged past the settle time."""
    inbox = get_settings().batch_inbox
    inbox.mkdir(parents=True, exist_ok=True)
    staged = inbox.parent / f".{name}"
    text.to_csv(staged, index=False)
    os.replace(staged, inbox / name)
    past = time.time() - 60
    os.utime(inbox / name, (past, past))


def _tick(platform) -> dg.SensorResult:
    result = batch_inbox_sensor(dg.build_sensor_context(instance=platform.instance))
    for request in result.dynamic_partitions_requests or []:  # what the daemon does with them
        platform.instance.add_dynamic_partitions(BATCH_FILES, list(request.partition_keys))
    return result


def _score_partition(platform, key: str):
    return defs.resolve_job_def("score_batch").execute_in_process(
        instance=platform.instance, partition_key=key, raise_on_error=False
    )


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> pd.DataFrame:
    text = pd.read_csv(
        generate_csv(tmp_path_factory.mktemp("night") / "n.csv", rows=ROWS, seed=5), dtype=str, keep_default_na=False
    )
    text.loc[3, "Credit Limit"] = "n/a"
    text.loc[1_200, "Date Of Account Opening"] = "12/31/2024"  # after the transaction
    return text


def test_1_a_dropped_file_is_scored_by_the_production_version_like_the_live_url(platform, night):
    result = platform.run("full_pipeline", FAST)
    assert result.success, failure_message(result)

    _drop("night-1.csv", night)
    _drop("bad name.csv", night.head(5))
    ticked = _tick(platform)
    assert [r.partition_key for r in ticked.run_requests] == ["night-1.csv"]
    assert platform.instance.get_dynamic_partitions(BATCH_FILES) == ["night-1.csv"]

    run = _score_partition(platform, "night-1.csv")
    assert run.success, failure_message(run)
    metadata = run.asset_materializations_for_node("batch_scores")[0].metadata
    assert metadata["rows"].value == ROWS and metadata["quarantined"].value == 2
    assert metadata["model_version"].value == "1"

    out = get_settings().batch_scores_root / "night-1.csv"
    scores = pd.read_parquet(out / SCORES_FILE)
    quarantine = pd.read_csv(out / QUARANTINE_FILE)
    assert quarantine["line"].tolist() == [5, 1_202]
    assert "Credit Limit: cannot parse 'n/a'" in quarantine["reason"][0]
    assert "Transaction Date is before Date Of Account Opening" in quarantine["reason"][1]

    valid = night.drop(index=[3, 1_200]).to_dict("records")
    online: list[float] = []
    with httpx.Client(base_url=platform.target.url, headers={"X-API-Key": platform.target.key()}) as client:
        for start in range(0, len(valid), 500):
            answer = client.post("/score", json=valid[start : start + 500]).json()
            assert answer["model_version"] == "1", answer
            online += answer["probabilities"]
    assert np.max(np.abs(np.asarray(online) - scores["probability"].to_numpy())) <= 1e-9


def test_2_the_command_line_scores_the_same_and_a_wrong_file_is_refused(platform, night, tmp_path, capsys):
    source = get_settings().batch_inbox / "night-1.csv"
    assert main(["score", str(source), "--out", str(tmp_path / "cli"), "--chunk-rows", "1000"]) == 0
    printed = capsys.readouterr().out
    assert f"{ROWS:,} rows" in printed and "2 quarantined" in printed and "by v1" in printed
    by_asset = pd.read_parquet(get_settings().batch_scores_root / "night-1.csv" / SCORES_FILE)
    by_cli = pd.read_parquet(tmp_path / "cli" / SCORES_FILE)
    pd.testing.assert_frame_equal(by_asset.drop(columns="batch_id"), by_cli.drop(columns="batch_id"))
    assert BatchSummary.read(tmp_path / "cli").quarantined == 2

    wrong = tmp_path / "wrong.csv"
    night.drop(columns=["Loan Amount"]).to_csv(wrong, index=False)
    assert main(["score", str(wrong), "--out", str(tmp_path / "wrong")]) == 1
    assert "missing required column(s): Loan Amount" in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists()

    _drop("wrong.csv", night.drop(columns=["Loan Amount"]))
    _tick(platform)
    run = _score_partition(platform, "wrong.csv")
    assert not run.success and "missing required column(s): Loan Amount" in failure_message(run)
