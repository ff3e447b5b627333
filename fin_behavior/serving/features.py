"""The one feature definition: a transaction in the bank's own layout (the Kaggle "Comprehensive Banking
Database" columns) -> the model's features. Training (data/features.py), `/score`, batch scoring, the serving
image and Azure's score.py all derive through `model_features`, so the five derived inputs are computed one way
everywhere and no client re-implements them.

numpy only (and no pandas import on the hot path): it runs inside the serving environment and the image. A
bundle records the definition it was trained with (`definition_id`, in model_info.json); a service whose code
derives differently refuses raw records for that bundle rather than score them with another definition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

NAME = "kaggle-transaction-v1"  # bump when the derivation changes on purpose
DATE_FORMAT = "%m/%d/%Y"  # the file writes 12/7/2023 (no leading zeros); %m/%d parse both forms

# Raw column -> the feature it becomes unchanged (numbers as floats, categories as text).
DIRECT: dict[str, str] = {
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
TEXT_INPUTS: tuple[str, ...] = (
    "Gender",
    "City",
    "Account Type",
    "Transaction Type",
    "Loan Type",
    "Loan Status",
    "Card Type",
    "Feedback Type",
    "Resolution Status",
)
NUMERIC_INPUTS: tuple[str, ...] = tuple(name for name in DIRECT if name not in TEXT_INPUTS)
OPENED, LAST_TRANSACTION, TRANSACTED = "Date Of Account Opening", "Last Transaction Date", "Transaction Date"
DATE_INPUTS: tuple[str, ...] = (OPENED, LAST_TRANSACTION, TRANSACTED)
INPUTS: tuple[str, ...] = (*DIRECT, *DATE_INPUTS)  # every raw column the model takes; the others are ignored
DERIVED: tuple[str, ...] = (
    "account_age_days",
    "days_since_last_transaction",
    "credit_utilisation",
    "transaction_month",
    "transaction_day_of_week",
)
_YEARS = (1678, 2261)  # the years pandas' nanosecond dates hold whole: training reads no other
_THURSDAY = 3  # 1970-01-01, day 0 of datetime64[D], was a Thursday (Monday = 0, as pandas' dayofweek)


def derive(columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The five derived features (float64 arrays) from the raw dates (anything numpy reads as datetime64) and
    the credit columns. A credit limit of 0 leaves the utilisation undefined (NaN): the model imputes it."""
    transacted = np.asarray(columns[TRANSACTED], dtype="datetime64[D]")
    opened = np.asarray(columns[OPENED], dtype="datetime64[D]")
    last = np.asarray(columns[LAST_TRANSACTION], dtype="datetime64[D]")
    limit = np.asarray(columns["Credit Limit"], dtype=np.float64)
    balance = np.asarray(columns["Credit Card Balance"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        utilisation = np.where(limit > 0, balance / np.where(limit > 0, limit, 1.0), np.nan)
    day = transacted.astype(np.int64)
    return {
        "account_age_days": (transacted - opened).astype(np.float64),
        "days_since_last_transaction": (transacted - last).astype(np.float64),
        "credit_utilisation": utilisation.astype(np.float64),
        "transaction_month": (transacted.astype("datetime64[M]").astype(np.int64) % 12 + 1).astype(np.float64),
        "transaction_day_of_week": ((day + _THURSDAY) % 7).astype(np.float64),
    }


def model_features(columns: Mapping[str, Any]) -> dict[str, Any]:
    """Every model feature from the raw input columns (raw name -> values): the direct ones renamed (numbers
    as float64 arrays, text as given), then the derived ones."""
    out: dict[str, Any] = {}
    for raw, feature in DIRECT.items():
        out[feature] = columns[raw] if raw in TEXT_INPUTS else np.asarray(columns[raw], dtype=np.float64)
    return out | derive(columns)


def parse_date(text: str) -> np.datetime64 | None:
    """One date as the file writes it (M/D/YYYY, leading zeros optional), or None. The same dates pandas'
    to_datetime(format=DATE_FORMAT) reads, without pandas on the hot path."""
    parts = text.split("/")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    month, day, year = parts
    if not (1 <= len(month) <= 2 and 1 <= len(day) <= 2 and len(year) == 4) or not _YEARS[0] <= int(year) <= _YEARS[1]:
        return None
    try:
        return np.datetime64(f"{year}-{int(month):02d}-{int(day):02d}", "D")
    except ValueError:  # 2/30/2023 and the like
        return None


# The derivation's fingerprint: its answers on fixed records (leap days, month ends, each weekday, a zero
# credit limit). Code that derives differently has a different fingerprint, whatever its comments say.
_PROBE: dict[str, list[Any]] = {
    TRANSACTED: ["2/29/2024", "1/1/2023", "12/31/2023", "7/15/2023", "3/5/2023", "6/6/2023", "9/9/2023"],
    OPENED: ["2/28/2000", "1/1/2023", "6/30/2022", "12/31/1999", "3/5/2023", "6/6/2006", "1/9/2019"],
    LAST_TRANSACTION: ["2/1/2024", "12/31/2022", "12/31/2023", "7/14/2023", "3/1/2023", "6/5/2023", "9/8/2023"],
    "Credit Limit": [1000.0, 0.0, 2500.0, 9999.99, 1.0, 5000.0, 7.5],
    "Credit Card Balance": [250.0, 10.0, 0.0, 1234.56, 3.0, 5000.0, 0.25],
}


def definition_id() -> str:
    """NAME and a hash of the direct inputs and of what the derivation answers on the probe records (dates
    parsed as the service parses them): what a bundle records."""
    dates = {name: [parse_date(v) for v in _PROBE[name]] for name in DATE_INPUTS}
    derived = derive(_PROBE | dates)
    digest = hashlib.sha256(repr(sorted(DIRECT.items())).encode())
    for name in DERIVED:
        digest.update(name.encode() + np.ascontiguousarray(derived[name]).tobytes())
    return f"{NAME}:{digest.hexdigest()[:16]}"
