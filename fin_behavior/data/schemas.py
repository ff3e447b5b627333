"""Pandera contracts for the raw table (after type parsing) and the processed, model-ready table."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from fin_behavior.data.columns import CATEGORIES


def _in(column: str) -> list[str]:
    return list(CATEGORIES[column])


class RawTransactions(pa.DataFrameModel):
    """The columns a feature or the target needs, after parsing; other raw columns are not checked."""

    Age: Series[float] = pa.Field(ge=18, le=120)
    Gender: Series[str] = pa.Field(isin=_in("Gender"))
    City: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": 100})  # any city: real exports vary
    account_type: Series[str] = pa.Field(isin=_in("Account Type"), alias="Account Type")
    account_balance: Series[float] = pa.Field(ge=0, le=1e9, alias="Account Balance")
    opened: Series[pd.Timestamp] = pa.Field(alias="Date Of Account Opening")
    last_transaction: Series[pd.Timestamp] = pa.Field(alias="Last Transaction Date")
    TransactionID: Series[str] = pa.Field(str_length={"min_value": 1})
    transaction_date: Series[pd.Timestamp] = pa.Field(alias="Transaction Date")
    transaction_type: Series[str] = pa.Field(isin=_in("Transaction Type"), alias="Transaction Type")
    transaction_amount: Series[float] = pa.Field(gt=0, le=1e9, alias="Transaction Amount")
    loan_amount: Series[float] = pa.Field(ge=0, le=1e9, alias="Loan Amount")
    loan_type: Series[str] = pa.Field(isin=_in("Loan Type"), alias="Loan Type")
    interest_rate: Series[float] = pa.Field(ge=0, le=100, alias="Interest Rate")
    loan_term: Series[float] = pa.Field(ge=1, le=600, alias="Loan Term")
    loan_status: Series[str] = pa.Field(isin=_in("Loan Status"), alias="Loan Status")
    card_type: Series[str] = pa.Field(isin=_in("Card Type"), alias="Card Type")
    credit_limit: Series[float] = pa.Field(ge=0, le=1e9, alias="Credit Limit")
    credit_card_balance: Series[float] = pa.Field(ge=0, le=1e9, alias="Credit Card Balance")
    minimum_payment_due: Series[float] = pa.Field(ge=0, le=1e9, alias="Minimum Payment Due")
    rewards_points: Series[float] = pa.Field(ge=0, le=1e9, alias="Rewards Points")
    feedback_type: Series[str] = pa.Field(isin=_in("Feedback Type"), alias="Feedback Type")
    resolution_status: Series[str] = pa.Field(isin=_in("Resolution Status"), alias="Resolution Status")

    @pa.dataframe_check(error="Transaction Date is before Date Of Account Opening")
    @classmethod
    def transaction_after_opening(cls, df: pd.DataFrame) -> Series[bool]:
        opened, transacted = df["Date Of Account Opening"], df["Transaction Date"]
        return (transacted >= opened) | opened.isna() | transacted.isna()  # missing dates are reported apart

    class Config:
        strict = False  # extra raw columns (names, IDs, Anomaly...) are allowed and ignored


class ProcessedDataset(pa.DataFrameModel):
    """Model-ready rows: business-form features (unscaled numbers, string categories) plus the target."""

    transaction_id: Series[str]  # uniqueness is its own asset check, so duplicates warn, not block
    age: Series[float] = pa.Field(ge=18, le=120)
    account_balance: Series[float] = pa.Field(ge=0)
    loan_amount: Series[float] = pa.Field(ge=0)
    interest_rate: Series[float] = pa.Field(ge=0, le=100)
    loan_term: Series[float] = pa.Field(ge=1, le=600)
    credit_limit: Series[float] = pa.Field(ge=0)
    credit_card_balance: Series[float] = pa.Field(ge=0)
    minimum_payment_due: Series[float] = pa.Field(ge=0)
    rewards_points: Series[float] = pa.Field(ge=0)
    account_age_days: Series[float] = pa.Field(ge=0)
    days_since_last_transaction: Series[float]
    credit_utilisation: Series[float] = pa.Field(nullable=True)  # undefined when the credit limit is 0
    transaction_month: Series[float] = pa.Field(ge=1, le=12)
    transaction_day_of_week: Series[float] = pa.Field(ge=0, le=6)
    gender: Series[str] = pa.Field(isin=_in("Gender"))
    city: Series[str]
    account_type: Series[str] = pa.Field(isin=_in("Account Type"))
    transaction_type: Series[str] = pa.Field(isin=_in("Transaction Type"))
    loan_type: Series[str] = pa.Field(isin=_in("Loan Type"))
    loan_status: Series[str] = pa.Field(isin=_in("Loan Status"))
    card_type: Series[str] = pa.Field(isin=_in("Card Type"))
    feedback_type: Series[str] = pa.Field(isin=_in("Feedback Type"))
    resolution_status: Series[str] = pa.Field(isin=_in("Resolution Status"))
    HighAmount: Series[int] = pa.Field(isin=[0, 1])

    class Config:
        strict = True
        ordered = True
