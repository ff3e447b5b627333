"""Reading a raw banking CSV: clear errors for files that are not the expected table, per-row reasons for
rows that are. The raw file is only ever read."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.errors
import pandera.pandas as pa

from fin_behavior.data.columns import DATE_COLUMNS, DATE_FORMAT, RAW_COLUMNS
from fin_behavior.data.schemas import RawTransactions

_RAW_SCHEMA = RawTransactions.to_schema()
REQUIRED_COLUMNS: tuple[str, ...] = tuple(_RAW_SCHEMA.columns)
NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    name for name, column in _RAW_SCHEMA.columns.items() if str(column.dtype) == "float64"
)
_SNIFF_BYTES = 64 * 1024


class RawDataError(ValueError):
    """The raw file cannot be used at all; the message says why and what to do."""


@dataclass(frozen=True)
class ParsedRaw:
    """Typed rows that passed validation, and the rejected ones with their original text and a reason."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame  # original string columns + `line` (1-based, header is line 1) + `reason`
    total_rows: int

    @property
    def invalid_fraction(self) -> float:
        return len(self.quarantine) / self.total_rows if self.total_rows else 0.0


def check_header(path: Path, required: tuple[str, ...] = REQUIRED_COLUMNS, use: str = "") -> list[str]:
    """The header of a CSV file that holds every `required` column, or RawDataError saying what is wrong."""
    if not path.exists():
        raise RawDataError(
            f"raw data file not found: {path}. Point FIN_BEHAVIOR_RAW_DATA_PATH at your CSV, "
            f"or create one with `fin-behavior generate-data --out {path}`."
        )
    if path.is_dir():
        raise RawDataError(f"raw data path {path} is a directory; it must be a CSV file.")
    if os.path.getsize(path) == 0:
        raise RawDataError(f"raw data file {path} is empty (0 bytes); expected a CSV with a header row.")
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise RawDataError(f"raw data file {path} is binary, not a CSV text file (found NUL bytes).")
    first_line = head.decode("utf-8", errors="replace").splitlines()[0] if head.strip() else ""
    header = next(csv.reader([first_line]), [])
    header = [h.strip().lstrip("\ufeff") for h in header]
    if len(header) <= 1:
        for name, delimiter in (("semicolon", ";"), ("tab", "\t"), ("pipe", "|")):
            if delimiter in first_line:
                raise RawDataError(
                    f"raw data file {path} uses {name} ({delimiter!r}) as its delimiter; "
                    "expected a comma-separated file. Re-export it as CSV with commas."
                )
        raise RawDataError(
            f"raw data file {path} does not look like a CSV: its first line has a single field "
            f"({first_line[:80]!r}). Expected the Comprehensive Banking Database header "
            f"({', '.join(RAW_COLUMNS[:4])}, ...)."
        )
    refuse_missing(path, header, required, use or "These are needed for features or the target")
    return header


def refuse_missing(path: Path, header: list[str], required: tuple[str, ...], use: str) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise RawDataError(
            f"raw data file {path} is missing required column(s): {', '.join(missing)}. "
            f"{use}; other columns may be absent. "
            f"Columns found: {', '.join(header[:50])}."
        )


def read_text_csv(path: Path, columns: tuple[str, ...], chunksize: int | None = None) -> Any:
    """`columns` of a CSV as text, empty cells missing (a DataFrame, or a reader of `chunksize`-row frames)."""
    return pd.read_csv(
        path,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        encoding_errors="replace",
        usecols=lambda c: c.strip().lstrip("\ufeff") in columns,
        chunksize=chunksize,
    )


def named_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The header's names as written, without spaces around them or a byte-order mark."""
    frame.columns = [c.strip().lstrip("\ufeff") for c in frame.columns]
    return frame


def read_raw_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The columns we use, as text (so one bad cell rejects one row, not the file), index = data row number."""
    path = Path(path)
    check_header(path)
    try:
        frame = named_columns(read_text_csv(path, REQUIRED_COLUMNS))
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise RawDataError(f"raw data file {path} could not be parsed as CSV: {exc}") from exc
    if frame.empty:
        raise RawDataError(f"raw data file {path} has a header but no data rows.")
    return frame[list(REQUIRED_COLUMNS)]


def _parse_types(text: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Numbers and dates parsed; cells that hold text but do not parse get a reason."""
    typed = text.copy()
    reasons = pd.Series("", index=text.index)
    for column in text.columns:
        if column in DATE_COLUMNS:
            typed[column] = pd.to_datetime(text[column], format=DATE_FORMAT, errors="coerce")
            expected = "a date M/D/YYYY"
        elif column in NUMERIC_COLUMNS:
            parsed = pd.to_numeric(text[column], errors="coerce")
            typed[column] = parsed.where(parsed.abs() < float("inf"))  # inf is no amount a bank records
            expected = "a finite number"
        else:
            continue
        bad = typed[column].isna() & text[column].notna()
        if bad.any():
            reasons[bad] += f"{column}: cannot parse " + text.loc[bad, column].map(repr) + f" as {expected}; "
    return typed, reasons


def _schema_reasons(typed: pd.DataFrame, unparsed: pd.Series, schema: pa.DataFrameSchema) -> pd.Series:
    reasons = pd.Series("", index=typed.index)
    try:
        schema.validate(typed, lazy=True)
        return reasons
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    cases = cases[cases["index"].notna()]
    for row, column, check, value in zip(
        cases["index"], cases["column"], cases["check"], cases["failure_case"], strict=True
    ):
        if column in typed.columns and pd.isna(value) and unparsed.get(row, "").find(f"{column}:") >= 0:
            continue  # already explained as a parse failure
        what = "missing value" if check == "not_nullable" else f"{value!r} fails {check}"
        reasons[row] += f"{column or 'row'}: {what}; "
    return reasons


def parse_raw(text: pd.DataFrame, schema: pa.DataFrameSchema = _RAW_SCHEMA) -> ParsedRaw:
    """Typed valid rows and the quarantined ones, each with its reasons (`schema`: the training contract)."""
    typed, unparsed = _parse_types(text)
    reasons = (unparsed + _schema_reasons(typed, unparsed, schema)).str.rstrip("; ")
    bad = reasons != ""
    quarantine = text[bad].copy()
    quarantine.insert(0, "line", quarantine.index + 2)
    quarantine["reason"] = reasons[bad]
    return ParsedRaw(valid=typed[~bad], quarantine=quarantine.reset_index(drop=True), total_rows=len(text))
