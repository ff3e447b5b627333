from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fin_behavior.data.ingest import REQUIRED_COLUMNS, RawDataError, parse_raw, read_raw_csv


def _sample(banking_csv: Path, rows: int = 50) -> pd.DataFrame:
    return pd.read_csv(banking_csv, dtype=str, nrows=rows)


def _write(frame: pd.DataFrame, path: Path, **kwargs) -> Path:
    frame.to_csv(path, index=False, **kwargs)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"just some words\nwith no commas\n", "does not look like a CSV"),
    ],
    ids=["empty", "binary", "not-csv"],
)
def test_unusable_files_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "raw.csv"
    path.write_bytes(content)
    with pytest.raises(RawDataError, match=message):
        read_raw_csv(path)


def test_missing_file_says_how_to_point_at_data(tmp_path):
    with pytest.raises(RawDataError, match=r"not found.*FIN_BEHAVIOR_RAW_DATA_PATH"):
        read_raw_csv(tmp_path / "nope.csv")


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_wrong_delimiter_is_named(tmp_path, banking_csv, sep, name):
    path = _write(_sample(banking_csv), tmp_path / "raw.csv", sep=sep)
    with pytest.raises(RawDataError, match=f"uses {name}.*comma"):
        read_raw_csv(path)


def test_header_only(tmp_path, banking_csv):
    path = _write(_sample(banking_csv).head(0), tmp_path / "raw.csv")
    with pytest.raises(RawDataError, match="header but no data rows"):
        read_raw_csv(path)


def test_missing_required_column_is_named(tmp_path, banking_csv):
    path = _write(_sample(banking_csv).drop(columns=["Transaction Amount", "Loan Type"]), tmp_path / "raw.csv")
    with pytest.raises(RawDataError, match=r"missing required column.*Transaction Amount, Loan Type"):
        read_raw_csv(path)


def test_accepts_kaggle_variants(tmp_path, banking_csv):
    """Without Anomaly, without the unused personal columns, with extra columns, in another order."""
    frame = _sample(banking_csv).drop(columns=["Anomaly", "First Name", "Email", "Address"])
    frame["Exported By"] = "kaggle"
    frame = frame[list(reversed(frame.columns))]
    text = read_raw_csv(_write(frame, tmp_path / "raw.csv"))
    assert tuple(text.columns) == REQUIRED_COLUMNS
    parsed = parse_raw(text)
    assert len(parsed.valid) == 50 and parsed.quarantine.empty


BAD_CELLS = [
    ("Transaction Date", "31/12/2023", "Transaction Date: cannot parse '31/12/2023' as a date"),
    ("Age", "-4", "Age: -4.0 fails greater_than_or_equal_to(18)"),
    ("Age", "forty", "Age: cannot parse 'forty' as a finite number"),
    ("Card Type", "Diners", "Card Type: 'Diners' fails isin"),
    ("Interest Rate", "250", "Interest Rate: 250.0 fails less_than_or_equal_to(100)"),
    ("Loan Amount", "", "Loan Amount: missing value"),
    ("Account Balance", "inf", "Account Balance: cannot parse 'inf' as a finite number"),
    ("Date Of Account Opening", "1/1/2024", "Transaction Date is before Date Of Account Opening"),
]


def test_each_bad_row_is_quarantined_with_its_line_and_reason(tmp_path, banking_csv):
    frame = _sample(banking_csv)
    for row, (column, value, _) in enumerate(BAD_CELLS):
        frame.loc[row * 3, column] = value
    parsed = parse_raw(read_raw_csv(_write(frame, tmp_path / "raw.csv")))
    assert parsed.total_rows == 50
    assert len(parsed.valid) == 50 - len(BAD_CELLS)
    assert list(parsed.quarantine["line"]) == [row * 3 + 2 for row in range(len(BAD_CELLS))]
    for reason, (_, _, expected) in zip(parsed.quarantine["reason"], BAD_CELLS, strict=True):
        assert expected in reason
    # the original text is kept, untouched, so a user can fix and re-feed it
    assert parsed.quarantine.loc[0, "Transaction Date"] == "31/12/2023"


def test_reading_never_modifies_the_raw_file(tmp_path, banking_csv):
    path = _write(_sample(banking_csv), tmp_path / "raw.csv")
    before = path.read_bytes()
    parse_raw(read_raw_csv(path))
    assert path.read_bytes() == before
