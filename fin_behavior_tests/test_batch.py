"""Batch scoring of a file in the bank's layout: validated like training, quarantined with reasons, scored by the
bundle in its serving environment, and row for row the same answer as /score."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fin_behavior.batch import QUARANTINE_FILE, SCORES_FILE, BatchError, ModelWorker, score_file
from fin_behavior.data.generate import generate_csv
from fin_behavior.records import BatchSummary

ROWS = 2_400
BROKEN = {  # data row (0-based) -> (column, bad value, what its reason says)
    7: ("Transaction Date", "2023-13-01", "Transaction Date: cannot parse"),
    150: ("Age", "old", "Age: cannot parse"),
    999: ("Gender", "Robot", "Gender: 'Robot' fails isin"),
    2_001: ("TransactionID", "", "TransactionID: missing value"),
}


@pytest.fixture(scope="module")
def bank_file(tmp_path_factory) -> tuple:
    """A generated file with a few broken rows, as CSV and as Parquet (typed numbers, text dates)."""
    folder = tmp_path_factory.mktemp("batch")
    csv = generate_csv(folder / "night.csv", rows=ROWS, seed=11)
    text = pd.read_csv(csv, dtype=str, keep_default_na=False)
    for row, (column, value, _) in BROKEN.items():
        text.loc[row, column] = value
    text.to_csv(csv, index=False)
    typed = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    typed.to_parquet(folder / "night.parquet", index=False)
    return csv, folder / "night.parquet", text


@pytest.fixture(scope="module")
def worker(serving_env, bundle):
    with ModelWorker(serving_env.python, bundle[0]) as running:
        yield running


def test_every_row_scored_in_batch_agrees_with_score_online(worker, service, bank_file, tmp_path):
    csv, _, text = bank_file
    summary = score_file(csv, tmp_path / "out", worker, "7", batch_id="b-1", chunk_rows=500)
    scores = pd.read_parquet(tmp_path / "out" / SCORES_FILE)
    assert summary.rows == ROWS and summary.scored == len(scores) == ROWS - len(BROKEN)
    assert list(scores.columns) == ["TransactionID", "probability", "decision", "model_version", "batch_id"]
    assert set(scores["model_version"]) == {"7"} and set(scores["batch_id"]) == {"b-1"}

    valid = text.drop(index=list(BROKEN)).to_dict("records")  # every column as the file has it, text
    online_p, online_d = [], []
    with service.client() as client:
        for start in range(0, len(valid), 500):
            answer = client.post("/score", json=valid[start : start + 500]).json()
            assert "probabilities" in answer, answer
            online_p += answer["probabilities"]
            online_d += answer["predictions"]
    assert np.max(np.abs(np.asarray(online_p) - scores["probability"].to_numpy())) <= 1e-9
    assert online_d == scores["decision"].tolist()
    assert scores["TransactionID"].tolist() == [r["TransactionID"] for r in valid]
    assert summary.decision_rate == pytest.approx(np.mean(online_d), abs=1e-6)


def test_quarantined_rows_carry_their_line_and_reason(worker, bank_file, tmp_path):
    csv, _, _ = bank_file
    summary = score_file(csv, tmp_path, worker, "7", chunk_rows=700)
    quarantine = pd.read_csv(tmp_path / QUARANTINE_FILE, dtype=str, keep_default_na=False)
    assert summary.quarantined == len(BROKEN) == len(quarantine)
    assert quarantine["line"].astype(int).tolist() == [row + 2 for row in BROKEN]  # the header is line 1
    for reason, (_, _, says) in zip(quarantine["reason"], BROKEN.values(), strict=True):
        assert says in reason
    assert summary.problems_by_column == {"Transaction Date": 1, "Age": 1, "Gender": 1, "TransactionID": 1}
    assert BatchSummary.read(tmp_path) == summary


def test_parquet_and_csv_in_any_chunk_size_give_the_same_scores(worker, bank_file, tmp_path):
    csv, parquet, _ = bank_file
    score_file(csv, tmp_path / "csv", worker, "7", batch_id="same", chunk_rows=100_000)
    summary = score_file(parquet, tmp_path / "parquet", worker, "7", batch_id="same", chunk_rows=333)
    assert summary.quarantined == len(BROKEN)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "csv" / SCORES_FILE), pd.read_parquet(tmp_path / "parquet" / SCORES_FILE)
    )


def test_a_file_with_a_wrong_column_set_is_refused_naming_the_columns(worker, bank_file, tmp_path):
    *_, text = bank_file
    wrong = text.drop(columns=["Transaction Date", "Credit Limit"]).rename(columns={"City": "Town"})
    for path in (tmp_path / "wrong.csv", tmp_path / "wrong.parquet"):
        wrong.to_csv(path, index=False) if path.suffix == ".csv" else wrong.to_parquet(path, index=False)
        with pytest.raises(BatchError) as refused:
            score_file(path, tmp_path / "out", worker, "7")
        message = str(refused.value)
        assert "missing required column(s): City, Credit Limit, Transaction Date" in message
        assert "Town" in message  # the columns it found
    assert not (tmp_path / "out").exists()  # refused before anything was written
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BatchError, match="neither CSV nor Parquet"):
        score_file(tmp_path / "notes.txt", tmp_path / "out", worker, "7")


def test_progress_is_reported_per_chunk_up_to_the_total(worker, bank_file, tmp_path):
    csv, _, _ = bank_file
    seen: list[tuple[int, int]] = []
    score_file(csv, tmp_path, worker, "7", chunk_rows=1_000, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1_000, ROWS), (2_000, ROWS), (ROWS, ROWS)]
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == ROWS
