"""Synthetic banking transactions in the exact layout of the Kaggle "Comprehensive Banking Database".

The public export is uniform noise: no column says anything about the transaction amount, so a leak-free
model scores ROC-AUC ~0.5 on it. This generator keeps that layout (40 columns, same names, order,
vocabularies, ranges and M/D/YYYY dates) but tells a story in which transaction size *is* learnable from
who the customer is and how they use the bank:

1. Each row is one customer with one transaction in 2023 (as in the export). A hidden *affluence* score
   grows with age, with living in an expensive city and with account tenure, plus personal noise.
2. Affluence drives the account: current (vs savings) accounts, higher balances, higher credit limits,
   AMEX cards, larger loans at lower interest rates, more rewards points.
3. The (log) transaction amount follows affluence, plus behaviour: transfers are largest and withdrawals
   smallest, money piles up the longer since the last transaction, December spending is higher and
   weekends lower. Individual noise on top keeps it far from deterministic.

`HighAmount` (amount >= its 95th percentile) is then predictable from non-amount features with a random
forest ROC-AUC of about 0.85 on 5,000 rows; see `benchmarks/README.md` for how it was measured. The
`Anomaly` flag, credit card balance, feedback and branch are noise, as in the export.

Rows are generated in fixed-size chunks, each with its own child seed, so memory stays flat at any row
count and a given `seed` always yields the same file.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from fin_behavior.data.columns import CATEGORIES, CITIES, RAW_COLUMNS

CHUNK_ROWS = 100_000
_EPOCH = date(1999, 1, 1)
_LAST_DAY = date(2025, 12, 31)
# "12/7/2023": no leading zeros, as the export writes them. Indexed by days since _EPOCH.
_DATE_STRINGS = np.array(
    [f"{d.month}/{d.day}/{d.year}" for d in (_EPOCH + timedelta(n) for n in range((_LAST_DAY - _EPOCH).days + 1))],
    dtype=object,
)
_EXPENSIVE_CITIES = {"New York", "San Francisco", "Boston", "Seattle", "Washington", "Los Angeles", "San Jose"}
_FIRST_NAMES = np.array(
    [
        "James",
        "Mary",
        "John",
        "Patricia",
        "Robert",
        "Jennifer",
        "Michael",
        "Linda",
        "William",
        "Elizabeth",
        "David",
        "Barbara",
        "Richard",
        "Susan",
        "Joseph",
        "Jessica",
        "Thomas",
        "Sarah",
        "Charles",
        "Karen",
        "Maria",
        "Daniel",
        "Lisa",
        "Matthew",
        "Nancy",
        "Anthony",
        "Betty",
        "Mark",
        "Sandra",
    ],
    dtype=object,
)
_LAST_NAMES = np.array(
    [
        "Smith",
        "Johnson",
        "Williams",
        "Brown",
        "Jones",
        "Garcia",
        "Miller",
        "Davis",
        "Rodriguez",
        "Martinez",
        "Hernandez",
        "Lopez",
        "Gonzalez",
        "Wilson",
        "Anderson",
        "Thomas",
        "Taylor",
        "Moore",
        "Jackson",
        "Martin",
        "Lee",
        "Perez",
        "Thompson",
        "White",
        "Harris",
        "Clark",
        "Lewis",
    ],
    dtype=object,
)
_STREETS = np.array(
    ["Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Sunset", "River"],
    dtype=object,
)


def _day_index(d: date) -> int:
    return (d - _EPOCH).days


def _dates(days: np.ndarray) -> np.ndarray:
    return _DATE_STRINGS[np.clip(days, 0, len(_DATE_STRINGS) - 1)]


def _pick(rng: np.random.Generator, values: tuple[str, ...] | np.ndarray, n: int, p=None) -> np.ndarray:
    return np.asarray(values, dtype=object)[rng.choice(len(values), size=n, p=p)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate_chunk(rng: np.random.Generator, n: int, first_id: int) -> pd.DataFrame:
    """`n` rows whose integer IDs start at `first_id`, in the raw column order."""
    ids = np.arange(first_id, first_id + n)
    age = rng.integers(18, 70, n)
    city_idx = rng.integers(0, len(CITIES), n)
    city = np.asarray(CITIES, dtype=object)[city_idx]
    expensive = np.isin(city_idx, [CITIES.index(c) for c in _EXPENSIVE_CITIES])

    txn_day = rng.integers(_day_index(date(2023, 1, 1)), _day_index(date(2023, 12, 31)) + 1, n)
    opened_day = rng.integers(_day_index(date(2000, 1, 1)), _day_index(date(2022, 12, 31)) + 1, n)
    tenure_years = (txn_day - opened_day) / 365.25
    affluence = 0.035 * (age - 43) + 0.6 * expensive + 0.03 * tenure_years + rng.normal(0, 1, n)

    current = rng.random(n) < _sigmoid(1.2 * affluence)
    balance = np.clip(np.exp(7.9 + 0.55 * affluence + rng.normal(0, 0.35, n)), 100, 10_000).round(2)
    credit_limit = np.clip(np.exp(8.2 + 0.45 * affluence + rng.normal(0, 0.3, n)), 1_000, 10_000).round(-2)
    amex = rng.random(n) < _sigmoid(1.5 * affluence - 1.0)
    card_type = np.where(amex, "AMEX", _pick(rng, ("MasterCard", "Visa"), n))
    card_balance = (credit_limit * rng.beta(2, 3, n)).round(2)
    loan_amount = np.clip(np.exp(9.6 + 0.5 * affluence + rng.normal(0, 0.45, n)), 1_000, 50_000).round(2)
    interest = np.clip(6.0 - 1.2 * affluence + rng.normal(0, 1.2, n), 1, 10).round(2)
    rewards = np.clip(np.exp(7.5 + 0.5 * affluence + rng.normal(0, 0.6, n)), 1, 9_999).astype(int)

    gap_days = np.minimum(rng.exponential(25, n).astype(int) + 1, 365)
    txn_type = _pick(rng, CATEGORIES["Transaction Type"], n)
    type_effect = np.select([txn_type == "Transfer", txn_type == "Withdrawal"], [0.45, -0.35], 0.0)
    txn_dates = pd.to_datetime(_EPOCH) + pd.to_timedelta(txn_day, unit="D")
    weekend = txn_dates.dayofweek.to_numpy() >= 5
    december = txn_dates.month.to_numpy() == 12
    log_amount = (
        5.6 + 0.6 * affluence + type_effect + 0.006 * gap_days + 0.3 * december - 0.25 * weekend + rng.normal(0, 0.8, n)
    )
    amount = np.clip(np.exp(log_amount), 10, 5_000).round(2)
    after = np.where(txn_type == "Deposit", balance + amount, balance - amount).round(2)

    first = _FIRST_NAMES[rng.integers(0, len(_FIRST_NAMES), n)]
    last = _LAST_NAMES[rng.integers(0, len(_LAST_NAMES), n)]
    decision_day = txn_day - rng.integers(30, 2_000, n)
    due_day = txn_day + rng.integers(5, 30, n)
    feedback_day = txn_day + rng.integers(0, 60, n)
    resolution = _pick(rng, CATEGORIES["Resolution Status"], n)

    frame = {
        "Customer ID": ids,
        "First Name": first,
        "Last Name": last,
        "Age": age,
        "Gender": _pick(rng, CATEGORIES["Gender"], n, p=[0.48, 0.48, 0.04]),
        "Address": pd.Series(rng.integers(1, 9_999, n)).astype(str).to_numpy(object)
        + " "
        + _STREETS[rng.integers(0, len(_STREETS), n)]
        + " Street",
        "City": city,
        "Contact Number": rng.integers(2_000_000_000, 9_999_999_999, n),
        "Email": pd.Series(first).str.lower().to_numpy(object)
        + "."
        + pd.Series(last).str.lower().to_numpy(object)
        + pd.Series(ids).astype(str).to_numpy(object)
        + "@example.com",
        "Account Type": np.where(current, "Current", "Savings"),
        "Account Balance": balance,
        "Date Of Account Opening": _dates(opened_day),
        "Last Transaction Date": _dates(txn_day - gap_days),
        "TransactionID": ids,
        "Transaction Date": _dates(txn_day),
        "Transaction Type": txn_type,
        "Transaction Amount": amount,
        "Account Balance After Transaction": after,
        "Branch ID": rng.integers(1, 100, n),
        "Loan ID": ids,
        "Loan Amount": loan_amount,
        "Loan Type": _pick(rng, CATEGORIES["Loan Type"], n),
        "Interest Rate": interest,
        "Loan Term": rng.choice([12, 24, 36, 48, 60], n),
        "Approval/Rejection Date": _dates(decision_day),
        "Loan Status": _pick(rng, CATEGORIES["Loan Status"], n),
        "CardID": ids,
        "Card Type": card_type,
        "Credit Limit": credit_limit,
        "Credit Card Balance": card_balance,
        "Minimum Payment Due": (card_balance * rng.uniform(0.02, 0.05, n)).round(2),
        "Payment Due Date": _dates(due_day),
        "Last Credit Card Payment Date": _dates(txn_day - rng.integers(1, 60, n)),
        "Rewards Points": rewards,
        "Feedback ID": ids,
        "Feedback Date": _dates(feedback_day),
        "Feedback Type": _pick(rng, CATEGORIES["Feedback Type"], n),
        "Resolution Status": resolution,
        "Resolution Date": _dates(feedback_day + rng.integers(1, 30, n)),
        "Anomaly": np.where(rng.random(n) < 0.02, -1, 1),
    }
    return pd.DataFrame(frame, columns=list(RAW_COLUMNS))


def generate_csv(out: str | os.PathLike[str], rows: int = 5_000, seed: int = 42) -> Path:
    """Write `rows` synthetic transactions to `out` atomically (a reader never sees half a file)."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    chunk_seeds = np.random.SeedSequence(seed).spawn((rows + CHUNK_ROWS - 1) // CHUNK_ROWS)
    writer = None
    try:
        for i, chunk_seed in enumerate(chunk_seeds):
            start = i * CHUNK_ROWS
            chunk = generate_chunk(np.random.default_rng(chunk_seed), min(CHUNK_ROWS, rows - start), start + 1)
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if writer is None:
                options = pacsv.WriteOptions(quoting_style="needed")
                writer = pacsv.CSVWriter(str(tmp), table.schema, write_options=options)
            writer.write_table(table)
        assert writer is not None
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return out
