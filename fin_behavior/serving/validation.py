"""Request bodies -> validated feature columns, or a 4xx that names the problem and says what is expected.

Accepted bodies: one record (`{"age": 41, ...}`), a list of records, and MLflow's `{"dataframe_records":
[...]}` and `{"dataframe_split": {"columns": [...], "data": [[...]]}}`. Anything else a client can send
(JSON that is not JSON, numbers too large for a float, nesting deeper than the parser's stack, values of the
wrong type, odd column names) is a 4xx here, never an exception further in.

A category value the model never saw is scored, not refused: the pipeline's one-hot encoder maps it to
"unknown" by design (a bank cannot refuse a customer for living in a new city). It is reported with the
answer and counted.

Every string that is scored is Unicode text. JSON can spell what is not: a lone UTF-16 surrogate (`"\\ud800"`)
decodes to a Python str that no encoder takes, and the ONNX runtime (UTF-8 strings) would answer it with a 500.
It is a 422 naming the field here (`is_text`); raw bytes that are not UTF-8 are already a 400 in `decode`.
"""

from __future__ import annotations

import json
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any

from fin_behavior.records import FeatureSpec

FLOAT32_MAX = 3.4028234e38  # the ONNX runtime scores float32: larger numbers would become infinity
_LONG_INT_DIGITS = 18  # longer integers are parsed as floats: no 4,300-digit limit, no int -> float overflow

_show = reprlib.Repr()
_show.maxlevel, _show.maxstring, _show.maxother, _show.maxlist, _show.maxdict = 2, 40, 40, 4, 4


class InputError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Parsed:
    columns: dict[str, list]  # every feature -> its values, one per record
    rows: int
    unknown: list[tuple[int, str, str]] = field(default_factory=list)  # (record, field, value) not seen in training
    ignored: list[str] | None = None  # raw records (raw_records.py): the layout's columns that are not inputs


def _reject_constant(token: str) -> Any:
    raise InputError(422, f"{token} is not a valid number here; send finite numbers only")


def _parse_int(digits: str) -> int | float:
    return int(digits) if len(digits) <= _LONG_INT_DIGITS else float(digits)


def decode(raw: bytes | str) -> Any:
    """The JSON document, or a 400 that says why it is not one. Bytes must be UTF-8 (RFC 8259): json.loads would
    also take UTF-16 and a byte-order mark, which the service would log as it came and no reader of the log takes."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(400, "body is nested too deeply to be a record or a list of records") from None


def records_of(body: Any) -> list[Any]:
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
        return _split_records(body["dataframe_split"])
    return [body]


def _split_records(split: Any) -> list[dict[str, Any]]:
    if (
        not isinstance(split, dict)
        or not isinstance(split.get("columns"), list)
        or not isinstance(split.get("data"), list)
    ):
        raise InputError(422, 'dataframe_split must be {"columns": [...], "data": [[...], ...]}')
    columns = split["columns"]
    odd = next((c for c in columns if not isinstance(c, str)), None)
    if odd is not None:
        raise InputError(422, f"dataframe_split.columns must be field names (strings), got {_show.repr(odd)}")
    if len(set(columns)) != len(columns):
        raise InputError(422, "dataframe_split.columns names a field twice")
    rows = []
    for i, row in enumerate(split["data"]):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InputError(422, f"dataframe_split.data[{i}] must be a list of {len(columns)} values")
        rows.append(dict(zip(columns, row, strict=True)))
    return rows


def is_text(value: str) -> bool:
    """True unless the string holds a lone UTF-16 surrogate, i.e. it is Unicode text that UTF-8 can carry."""
    if value.isascii():  # nearly every value: no encoding on the hot path
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def not_text(where: str) -> InputError:
    return InputError(
        422, f"{where} is not valid Unicode text: it holds a lone UTF-16 surrogate (such as \\ud800); send UTF-8 text"
    )


def _number(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(422, f"{where}: field '{name}' must be a number, got {_show.repr(value)}")
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise InputError(
            422, f"{where}: field '{name}' must be a finite number within +-3.4e38, got {_show.repr(value)}"
        )
    return value


class Schema:
    """What a served model takes, prepared once per bundle: the hot path only looks things up."""

    def __init__(self, features: list[FeatureSpec]):
        self.features = [(f.name, f.dtype == "float", frozenset(f.categories or ())) for f in features]
        self.names = [f.name for f in features]
        self.known = frozenset(self.names)

    @staticmethod
    def _records(body: Any, max_rows: int) -> list[Any]:
        records = records_of(body)
        if not records:
            raise InputError(422, "no records to score: send at least one")
        if len(records) > max_rows:
            raise InputError(413, f"{len(records)} records in one request; at most {max_rows} (split the batch)")
        return records

    def parse(self, body: Any, max_rows: int) -> Parsed:
        records = self._records(body, max_rows)
        parsed = Parsed({name: [] for name in self.names}, len(records))
        for i, record in enumerate(records):
            where = f"record {i}" if len(records) > 1 else "record"
            if not isinstance(record, dict):
                raise InputError(422, f"{where} must be a JSON object of feature: value")
            if not self.known.issuperset(record):
                shown = ", ".join(_show.repr(k) for k in record if k not in self.known)
                raise InputError(422, f"{where}: unknown field(s) {shown}; expected exactly: {', '.join(self.names)}")
            for name, numeric, categories in self.features:
                if name not in record:
                    raise InputError(422, f"{where}: missing field '{name}'")
                value = record[name]
                if numeric:
                    value = _number(where, name, value)
                elif not isinstance(value, str):
                    raise InputError(422, f"{where}: field '{name}' must be a string, got {_show.repr(value)}")
                elif not is_text(value):
                    raise not_text(f"{where}: field '{name}'")
                elif categories and value not in categories:
                    parsed.unknown.append((i, name, value))
                parsed.columns[name].append(value)
        return parsed
