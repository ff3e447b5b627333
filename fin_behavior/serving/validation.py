"""Request bodies -> validated feature columns, or a 4xx that names the field and says what is expected.

Accepted bodies: one record (`{"age": 41, ...}`), a list of records, and MLflow's `{"dataframe_records":
[...]}` and `{"dataframe_split": {"columns": [...], "data": [[...]]}}`.
"""

from __future__ import annotations

import math
from typing import Any

from fin_behavior.records import FeatureSpec


class InputError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _records(body: Any) -> list[Any]:
    if isinstance(body, list):
        return body
    if not isinstance(body, dict):
        raise InputError(
            422,
            "body must be a JSON object (one record), a list of records, or an MLflow "
            "dataframe_records / dataframe_split object",
        )
    if "dataframe_records" in body:
        records = body["dataframe_records"]
        if not isinstance(records, list):
            raise InputError(422, "dataframe_records must be a list of records")
        return records
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if (
            not isinstance(split, dict)
            or not isinstance(split.get("columns"), list)
            or not isinstance(split.get("data"), list)
        ):
            raise InputError(422, 'dataframe_split must be {"columns": [...], "data": [[...], ...]}')
        columns = split["columns"]
        rows = []
        for i, row in enumerate(split["data"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise InputError(422, f"dataframe_split.data[{i}] must be a list of {len(columns)} values")
            rows.append(dict(zip(columns, row, strict=True)))
        return rows
    return [body]


def parse(body: Any, features: list[FeatureSpec], max_rows: int) -> dict[str, list]:
    records = _records(body)
    if not records:
        raise InputError(422, "no records to score: send at least one")
    if len(records) > max_rows:
        raise InputError(413, f"{len(records)} records in one request; at most {max_rows} (split the batch)")
    names = [f.name for f in features]
    known = set(names)
    columns: dict[str, list] = {name: [] for name in names}
    for i, record in enumerate(records):
        where = f"record {i}" if len(records) > 1 else "record"
        if not isinstance(record, dict):
            raise InputError(422, f"{where} must be a JSON object of feature: value")
        unknown = [k for k in record if k not in known]
        if unknown:
            raise InputError(
                422,
                f"{where}: unknown field(s) {', '.join(map(repr, unknown[:5]))}; expected exactly: {', '.join(names)}",
            )
        for feature in features:
            name = feature.name
            if name not in record:
                raise InputError(422, f"{where}: missing field '{name}'")
            value = record[name]
            if feature.dtype == "float":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InputError(422, f"{where}: field '{name}' must be a number, got {value!r}")
                if not math.isfinite(value):
                    raise InputError(422, f"{where}: field '{name}' must be a finite number, got {value!r}")
            else:
                if not isinstance(value, str):
                    raise InputError(422, f"{where}: field '{name}' must be a string, got {value!r}")
                allowed = feature.categories
                if allowed and value not in allowed:
                    raise InputError(
                        422, f"{where}: field '{name}' has unknown value {value!r}; allowed: {', '.join(allowed)}"
                    )
            columns[name].append(value)
    return columns
