"""The one feature definition (numpy, no pandas) against pandas' reading of the same dates, and its fingerprint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fin_behavior.serving import features as fd


@pytest.fixture(scope="module")
def dates() -> pd.DataFrame:
    """Every day from 1999 to 2025 as the file writes it, paired with shuffled earlier days."""
    days = pd.date_range("1999-01-01", "2025-12-31", freq="D")
    rng = np.random.default_rng(0)
    earlier = days - pd.to_timedelta(rng.integers(0, 9_000, len(days)), unit="D")
    return pd.DataFrame(
        {
            fd.TRANSACTED: [f"{d.month}/{d.day}/{d.year}" for d in days],
            fd.OPENED: [f"{d.month}/{d.day}/{d.year}" for d in earlier],
            fd.LAST_TRANSACTION: [f"{d.month:02d}/{d.day:02d}/{d.year}" for d in earlier],
        }
    )


def test_derived_dates_agree_with_pandas_on_every_day(dates):
    by_pandas = {c: pd.to_datetime(dates[c], format=fd.DATE_FORMAT) for c in dates}
    parsed = {c: np.array([fd.parse_date(v) for v in dates[c]], dtype="datetime64[D]") for c in dates}
    n = len(dates)
    ones = np.ones(n)
    from_text = fd.derive(parsed | {"Credit Limit": ones, "Credit Card Balance": ones})
    from_pandas = fd.derive(
        {c: by_pandas[c].to_numpy() for c in dates} | {"Credit Limit": ones, "Credit Card Balance": ones}
    )
    transacted = by_pandas[fd.TRANSACTED]
    reference = {
        "account_age_days": (transacted - by_pandas[fd.OPENED]).dt.days,
        "days_since_last_transaction": (transacted - by_pandas[fd.LAST_TRANSACTION]).dt.days,
        "transaction_month": transacted.dt.month,
        "transaction_day_of_week": transacted.dt.dayofweek,
    }
    for name, expected in reference.items():
        assert np.array_equal(from_text[name], expected.to_numpy(float)), name
        assert np.array_equal(from_pandas[name], expected.to_numpy(float)), name


@pytest.mark.parametrize(
    "text", ["12/7/2023", "12/07/2023", "2/29/2024", "2/29/2023", "13/1/2023", "1/32/2023", "2023-12-07",
             "12/7/23", " 12/7/2023", "1/1/0099", "12/7/2023x", "\u0661/1/2023", "", "1/1/1678", "12/31/2261"],
)  # fmt: skip
def test_a_date_reads_as_pandas_reads_it_with_the_files_format(text):
    by_pandas = pd.to_datetime(pd.Series([text]), format=fd.DATE_FORMAT, errors="coerce")[0]
    ours = fd.parse_date(text)
    assert (ours is None) == pd.isna(by_pandas), text
    if ours is not None:
        assert ours == np.datetime64(by_pandas.date(), "D")


def test_credit_utilisation_is_undefined_without_a_credit_limit():
    day = np.array(["2023-01-02"], dtype="datetime64[D]")
    dates = {fd.TRANSACTED: day, fd.OPENED: day, fd.LAST_TRANSACTION: day}
    for limit, balance, expected in ((2_000.0, 500.0, 0.25), (0.0, 500.0, np.nan), (np.nan, 1.0, np.nan)):
        derived = fd.derive(dates | {"Credit Limit": [limit], "Credit Card Balance": [balance]})
        np.testing.assert_equal(derived["credit_utilisation"], [expected])


def test_the_fingerprint_moves_when_the_derivation_does(monkeypatch):
    before = fd.definition_id()
    assert before.startswith(fd.NAME + ":") and fd.definition_id() == before
    monkeypatch.setattr(fd, "_THURSDAY", 4)  # a day-of-week off by one
    assert fd.definition_id() != before
    monkeypatch.undo()
    monkeypatch.setitem(fd.DIRECT, "Age", "age_in_months")  # an input renamed
    assert fd.definition_id() != before
