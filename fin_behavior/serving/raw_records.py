"""The bank's own record as a scoring body: a transaction with the Kaggle layout's column names and formats
("Transaction Date": "12/7/2023", "Credit Limit": 2700, ...), turned into the model's features by the one
feature definition (features.py).

Columns of the layout that are not inputs (identifiers, personal data, and the columns that reveal the amount:
"Transaction Amount", "Account Balance After Transaction") are ignored and listed in the answer's
`ignored_columns`, so a bank system can send the record it holds. A column the layout does not have is a 422
naming it; so is a missing or malformed input, by its raw name. The feature-shaped body keeps working: a body
is read as raw records when its first record names a column of the layout.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from fin_behavior.records import FeatureSpec, ModelInfo
from fin_behavior.serving import features as fd
from fin_behavior.serving.validation import InputError, Parsed, Schema, _number, _show, is_text, not_text

# The layout, in file order (data/columns.py reads it from here): what a raw record may hold.
LAYOUT: tuple[str, ...] = (
    "Customer ID",
    "First Name",
    "Last Name",
    "Age",
    "Gender",
    "Address",
    "City",
    "Contact Number",
    "Email",
    "Account Type",
    "Account Balance",
    "Date Of Account Opening",
    "Last Transaction Date",
    "TransactionID",
    "Transaction Date",
    "Transaction Type",
    "Transaction Amount",
    "Account Balance After Transaction",
    "Branch ID",
    "Loan ID",
    "Loan Amount",
    "Loan Type",
    "Interest Rate",
    "Loan Term",
    "Approval/Rejection Date",
    "Loan Status",
    "CardID",
    "Card Type",
    "Credit Limit",
    "Credit Card Balance",
    "Minimum Payment Due",
    "Payment Due Date",
    "Last Credit Card Payment Date",
    "Rewards Points",
    "Feedback ID",
    "Feedback Date",
    "Feedback Type",
    "Resolution Status",
    "Resolution Date",
    "Anomaly",
)
_LAYOUT = frozenset(LAYOUT)
_INPUTS = frozenset(fd.INPUTS)
_ORDER = {name: i for i, name in enumerate(LAYOUT)}
RAW_NAME = {feature: raw for raw, feature in fd.DIRECT.items()}  # feature -> the raw column it comes from


@functools.cache
def served_definition() -> str:
    return fd.definition_id()


def raw_refusal(info: ModelInfo) -> str:
    """Why this bundle cannot score raw records here ("" when it can)."""
    if not info.feature_definition:
        return (
            "this model version records no feature definition (built before raw records were taken, or a "
            "submitted model): send the feature-shaped record (GET /openapi.json)"
        )
    if info.feature_definition != served_definition():
        return (
            f"this model version was trained with feature definition {info.feature_definition}, this service "
            f"derives {served_definition()}: send the feature-shaped record, or serve a version built with it"
        )
    return ""


_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?")  # a CSV's number, ASCII only


def is_raw(record: Any) -> bool:
    """A record in the bank's layout, not the model's: it names a column of the layout."""
    return isinstance(record, dict) and not _LAYOUT.isdisjoint(record)


def _raw_number(where: str, name: str, value: Any) -> float:
    if isinstance(value, str):  # the file's text ("2700.5"), as a system reading the CSV may send it
        try:
            if not _DECIMAL.fullmatch(value):  # float() also takes "1_000", " 27 " and non-ASCII digits
                raise ValueError(value)
            value = float(value)
        except ValueError:
            raise InputError(422, f"{where}: column '{name}' must be a number, got {_show.repr(value)}") from None
    return float(_number(where, name, value))


def _date(where: str, name: str, value: Any) -> np.datetime64:
    parsed = fd.parse_date(value) if isinstance(value, str) else None
    if parsed is None:
        raise InputError(
            422, f"{where}: column '{name}' must be a date as the file writes it (M/D/YYYY), got {_show.repr(value)}"
        )
    return parsed


class RecordSchema(Schema):
    """The bundle's Schema, which also takes raw records when the bundle's feature definition is this code's."""

    def __init__(self, features: list[FeatureSpec], refusal: str):
        super().__init__(features)
        self.refusal = refusal
        self.raw_categories = {RAW_NAME[f.name]: frozenset(f.categories or ()) for f in features if f.name in RAW_NAME}

    def parse(self, body: Any, max_rows: int) -> Parsed:
        records = self._records(body, max_rows)
        if not is_raw(records[0]):
            return super().parse(records, max_rows)
        if self.refusal:
            raise InputError(422, f"a raw record (it names {_raw_named(records[0])}) cannot be scored: {self.refusal}")
        return self._parse_raw(records)

    def _parse_raw(self, records: list[Any]) -> Parsed:
        columns: dict[str, list] = {name: [] for name in fd.INPUTS}
        ignored: set[str] = set()
        unknown: list[tuple[int, str, str]] = []
        for i, record in enumerate(records):
            where = f"record {i}" if len(records) > 1 else "record"
            if not isinstance(record, dict):
                raise InputError(422, f"{where} must be a JSON object of column: value")
            extra = [k for k in record if k not in _INPUTS]
            odd = [k for k in extra if k not in _LAYOUT]
            if odd:
                shown = ", ".join(_show.repr(k) for k in odd[:8])
                raise InputError(
                    422,
                    f"{where}: unknown column(s) {shown}: a raw record holds the columns of the bank's layout; "
                    f"the model takes {', '.join(fd.INPUTS)} (the layout's other columns are ignored)",
                )
            ignored.update(extra)
            missing = [name for name in fd.INPUTS if name not in record]
            if missing:
                named = ", ".join(f"'{name}'" for name in missing)
                raise InputError(422, f"{where}: missing column{'s' if len(missing) > 1 else ''} {named}")
            for name in fd.NUMERIC_INPUTS:
                columns[name].append(_raw_number(where, name, record[name]))
            for name in fd.TEXT_INPUTS:
                value = record[name]
                if not isinstance(value, str):
                    raise InputError(422, f"{where}: column '{name}' must be a string, got {_show.repr(value)}")
                if not is_text(value):
                    raise not_text(f"{where}: column '{name}'")
                if self.raw_categories[name] and value not in self.raw_categories[name]:
                    unknown.append((i, fd.DIRECT[name], value))
                columns[name].append(value)
            dates = {name: _date(where, name, record[name]) for name in fd.DATE_INPUTS}
            if dates[fd.TRANSACTED] < dates[fd.OPENED]:
                raise InputError(
                    422,
                    f"{where}: 'Transaction Date' {record[fd.TRANSACTED]} is before 'Date Of Account Opening' "
                    f"{record[fd.OPENED]}: the model takes transactions on open accounts (check both dates)",
                )
            for name, value in dates.items():
                columns[name].append(value)
        features = fd.model_features(columns)
        return Parsed(
            {name: features[name] for name in self.names},
            len(records),
            unknown,
            ignored=sorted(ignored, key=_ORDER.__getitem__),
        )


def _raw_named(record: dict) -> str:
    return ", ".join(repr(k) for k in list(k for k in record if k in _LAYOUT)[:3])


def feature_record(record: dict) -> dict[str, Any]:
    """One raw record's features as plain values (the monitor reads logged raw requests through this); an
    input that does not parse becomes None, as a missing field would."""
    try:
        columns: dict[str, list] = {}
        for name in fd.NUMERIC_INPUTS:
            columns[name] = [float(record[name])]
        for name in fd.TEXT_INPUTS:
            columns[name] = [record[name]]
        for name in fd.DATE_INPUTS:
            columns[name] = [fd.parse_date(record[name])]
        features = fd.model_features(columns)
    except (KeyError, TypeError, ValueError):
        return {}
    return {name: (values[0].item() if hasattr(values[0], "item") else values[0]) for name, values in features.items()}


def raw_record_schema(features: list[FeatureSpec]) -> dict[str, Any]:
    """The raw record as JSON Schema (for /openapi.json): the inputs typed, the layout's other columns ignored."""
    categories = {RAW_NAME[f.name]: f.categories for f in features if f.name in RAW_NAME and f.categories}
    properties: dict[str, dict[str, Any]] = {}
    for name in LAYOUT:
        if name in fd.NUMERIC_INPUTS:
            properties[name] = {"type": ["number", "string"], "description": "a number, or the file's text of one"}
        elif name in fd.TEXT_INPUTS:
            properties[name] = {"type": "string", **({"enum": categories[name]} if name in categories else {})}
        elif name in fd.DATE_INPUTS:
            properties[name] = {"type": "string", "pattern": r"^\d{1,2}/\d{1,2}/\d{4}$", "description": "M/D/YYYY"}
        else:
            properties[name] = {"description": "not an input: ignored, listed in ignored_columns"}
    return {"type": "object", "properties": properties, "required": list(fd.INPUTS), "additionalProperties": False}
