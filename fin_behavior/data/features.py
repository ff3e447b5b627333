"""Raw typed rows -> model-ready rows: derived behaviour features, the `HighAmount` target, no identifiers.

Features stay in business form (string categories, unscaled numbers); encoding and scaling belong to the
model pipeline so that serving never re-implements them. Personal data (names, address, phone, email) and
IDs never reach the features, nor do the columns that reveal the amount (Transaction Amount itself and
Account Balance After Transaction).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fin_behavior.data.columns import FEATURES, KEY, NUMERIC_FEATURES, TARGET

_RENAMES = {
    "Age": "age",
    "Gender": "gender",
    "City": "city",
    "Account Type": "account_type",
    "Account Balance": "account_balance",
    "Transaction Type": "transaction_type",
    "Loan Amount": "loan_amount",
    "Loan Type": "loan_type",
    "Interest Rate": "interest_rate",
    "Loan Term": "loan_term",
    "Loan Status": "loan_status",
    "Card Type": "card_type",
    "Credit Limit": "credit_limit",
    "Credit Card Balance": "credit_card_balance",
    "Minimum Payment Due": "minimum_payment_due",
    "Rewards Points": "rewards_points",
    "Feedback Type": "feedback_type",
    "Resolution Status": "resolution_status",
}


def high_amount_threshold(amounts: pd.Series, quantile: float) -> float:
    if not 0 < quantile < 1:
        raise ValueError(f"target_quantile must be between 0 and 1 (exclusive), got {quantile}")
    return float(amounts.quantile(quantile))


def build_features(valid: pd.DataFrame, target_quantile: float = 0.95) -> pd.DataFrame:
    """Processed table (KEY, FEATURES..., TARGET) from rows that passed `RawTransactions`."""
    txn_date = valid["Transaction Date"]
    out = valid[list(_RENAMES)].rename(columns=_RENAMES)
    out[KEY] = valid["TransactionID"].astype(str)
    out["account_age_days"] = (txn_date - valid["Date Of Account Opening"]).dt.days.astype(float)
    out["days_since_last_transaction"] = (txn_date - valid["Last Transaction Date"]).dt.days.astype(float)
    limit = valid["Credit Limit"].where(valid["Credit Limit"] > 0)
    out["credit_utilisation"] = (valid["Credit Card Balance"] / limit).astype(float)
    out["transaction_month"] = txn_date.dt.month.astype(float)
    out["transaction_day_of_week"] = txn_date.dt.dayofweek.astype(float)
    amount = valid["Transaction Amount"]
    out[TARGET] = (amount >= high_amount_threshold(amount, target_quantile)).astype(np.int64)
    out[list(NUMERIC_FEATURES)] = out[list(NUMERIC_FEATURES)].astype(float)
    return out[[KEY, *FEATURES, TARGET]].reset_index(drop=True)
