from __future__ import annotations

import pandas as pd
import pytest

from fin_behavior.data.processing import (
    DataQualityError,
    dataset_version,
    enforce_invalid_fraction,
    process_raw_file,
)


def test_too_many_invalid_rows_fail_with_columns_lines_and_setting(tmp_path, banking_csv):
    frame = pd.read_csv(banking_csv, dtype=str, nrows=200)
    frame.loc[:9, "Age"] = "-1"  # 5% bad
    frame.to_csv(tmp_path / "raw.csv", index=False)
    data = process_raw_file(tmp_path / "raw.csv", 0.95)
    assert len(data.quarantine) == 10 and len(data.dataset) == 190
    with pytest.raises(DataQualityError) as info:
        enforce_invalid_fraction(data, 0.01, tmp_path / "q.csv")
    message = str(info.value)
    for expected in (
        "10 of 200 rows (5.00%)",
        "Age (10 rows)",
        "First bad lines: 2, 3",
        "max_invalid_fraction",
        "FIN_BEHAVIOR_MAX_INVALID_FRACTION",
        str(tmp_path / "q.csv"),
    ):
        assert expected in message
    enforce_invalid_fraction(data, 0.06, tmp_path / "q.csv")  # within a looser limit: no error


def test_all_rows_invalid_always_fails(tmp_path, banking_csv):
    frame = pd.read_csv(banking_csv, dtype=str, nrows=20)
    frame["Gender"] = "?"
    frame.to_csv(tmp_path / "raw.csv", index=False)
    data = process_raw_file(tmp_path / "raw.csv", 0.95)
    with pytest.raises(DataQualityError, match=r"20 of 20 rows .* no valid rows remain"):
        enforce_invalid_fraction(data, 1.0, tmp_path / "q.csv")


def test_version_follows_content_only(banking_csv):
    a = process_raw_file(banking_csv, 0.95).dataset
    assert dataset_version(a) == dataset_version(a.copy())
    b = a.copy()
    b.loc[0, "age"] += 1
    assert dataset_version(b) != dataset_version(a)
