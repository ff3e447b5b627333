"""The raw table's contract: the Kaggle "Comprehensive Banking Database" column names, order and vocabularies.

Shared by the generator (which writes exactly this layout) and the reader/validator (which accepts it).
"""

from __future__ import annotations

from fin_behavior.serving.features import DATE_FORMAT as DATE_FORMAT  # the feature definition's, re-exported
from fin_behavior.serving.raw_records import LAYOUT

RAW_COLUMNS: tuple[str, ...] = LAYOUT  # written once, where the scoring service reads raw records too

CATEGORIES: dict[str, tuple[str, ...]] = {
    "Gender": ("Male", "Female", "Other"),
    "Account Type": ("Savings", "Current"),
    "Transaction Type": ("Deposit", "Withdrawal", "Transfer"),
    "Loan Type": ("Mortgage", "Auto", "Personal"),
    "Loan Status": ("Approved", "Closed", "Rejected"),
    "Card Type": ("MasterCard", "AMEX", "Visa"),
    "Feedback Type": ("Suggestion", "Complaint", "Praise"),
    "Resolution Status": ("Pending", "Resolved"),
}

CITIES: tuple[str, ...] = (
    "New York",
    "Los Angeles",
    "Chicago",
    "Houston",
    "Phoenix",
    "Philadelphia",
    "San Antonio",
    "San Diego",
    "Dallas",
    "San Jose",
    "Austin",
    "Jacksonville",
    "Fort Worth",
    "Columbus",
    "Charlotte",
    "San Francisco",
    "Indianapolis",
    "Seattle",
    "Denver",
    "Washington",
    "Boston",
    "El Paso",
    "Nashville",
    "Detroit",
    "Oklahoma City",
    "Portland",
    "Las Vegas",
    "Memphis",
    "Louisville",
    "Baltimore",
    "Milwaukee",
    "Albuquerque",
    "Tucson",
    "Fresno",
    "Mesa",
    "Sacramento",
    "Atlanta",
    "Kansas City",
    "Colorado Springs",
    "Miami",
)

DATE_COLUMNS: tuple[str, ...] = (
    "Date Of Account Opening",
    "Last Transaction Date",
    "Transaction Date",
    "Approval/Rejection Date",
    "Payment Due Date",
    "Last Credit Card Payment Date",
    "Feedback Date",
    "Resolution Date",
)

TARGET_SOURCE = "Transaction Amount"
TRANSACTION_ID = "TransactionID"

# The processed, model-ready table (business form). Light on purpose: the serving environment imports it.
TARGET = "HighAmount"
KEY = "transaction_id"
NUMERIC_FEATURES: tuple[str, ...] = (
    "age",
    "account_balance",
    "loan_amount",
    "interest_rate",
    "loan_term",
    "credit_limit",
    "credit_card_balance",
    "minimum_payment_due",
    "rewards_points",
    "account_age_days",
    "days_since_last_transaction",
    "credit_utilisation",
    "transaction_month",
    "transaction_day_of_week",
)
CATEGORICAL_FEATURES: tuple[str, ...] = (
    "gender",
    "city",
    "account_type",
    "transaction_type",
    "loan_type",
    "loan_status",
    "card_type",
    "feedback_type",
    "resolution_status",
)
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES
