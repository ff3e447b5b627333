from __future__ import annotations

import pandas as pd
import pytest

from fin_behavior.data.columns import FEATURES, KEY, TARGET
from fin_behavior.data.features import build_features
from fin_behavior.data.ingest import parse_raw


def _raw_row(**overrides: str) -> dict[str, str]:
    row = {
        "Age": "40",
        "Gender": "Female",
        "City": "Boston",
        "Account Type": "Current",
        "Account Balance": "5000",
        "Date Of Account Opening": "1/1/2023",
        "Last Transaction Date": "3/1/2023",
        "TransactionID": "7",
        "Transaction Date": "3/11/2023",
        "Transaction Type": "Transfer",
        "Transaction Amount": "100",
        "Loan Amount": "20000",
        "Loan Type": "Auto",
        "Interest Rate": "4.5",
        "Loan Term": "36",
        "Loan Status": "Approved",
        "Card Type": "AMEX",
        "Credit Limit": "4000",
        "Credit Card Balance": "1000",
        "Minimum Payment Due": "30",
        "Rewards Points": "900",
        "Feedback Type": "Praise",
        "Resolution Status": "Resolved",
    }
    return row | overrides


def test_derived_features_have_their_meaning():
    parsed = parse_raw(pd.DataFrame([_raw_row()]))
    out = build_features(parsed.valid).iloc[0]
    assert out["account_age_days"] == 69  # 1 Jan -> 11 Mar 2023
    assert out["days_since_last_transaction"] == 10
    assert out["credit_utilisation"] == pytest.approx(0.25)
    assert out["transaction_month"] == 3
    assert out["transaction_day_of_week"] == 5  # 11 Mar 2023 was a Saturday
    assert out[KEY] == "7"


def test_no_identifiers_personal_data_or_amount_in_features():
    forbidden = {"transaction_amount", "account_balance_after_transaction", "first_name", "email", "customer_id"}
    assert not forbidden & set(FEATURES)
    parsed = parse_raw(pd.DataFrame([_raw_row()]))
    assert list(build_features(parsed.valid).columns) == [KEY, *FEATURES, TARGET]


@pytest.mark.parametrize(("quantile", "positives"), [(0.95, 5), (0.5, 50)])
def test_target_is_amount_at_or_above_the_quantile(quantile, positives):
    rows = [_raw_row(TransactionID=str(i), **{"Transaction Amount": str(i + 1)}) for i in range(100)]
    data = build_features(parse_raw(pd.DataFrame(rows)).valid, target_quantile=quantile)
    assert data[TARGET].sum() == positives
    assert data.loc[data[TARGET] == 1, KEY].astype(int).min() == 100 - positives


def test_zero_credit_limit_leaves_utilisation_undefined():
    data = build_features(parse_raw(pd.DataFrame([_raw_row(**{"Credit Limit": "0"})])).valid)
    assert data["credit_utilisation"].isna().all()


def test_invalid_quantile_is_refused():
    with pytest.raises(ValueError, match="target_quantile"):
        build_features(parse_raw(pd.DataFrame([_raw_row()])).valid, target_quantile=1.5)
