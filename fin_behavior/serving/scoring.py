"""One scoring request, the same wherever the model serves (the local service and Azure ML's score.py):
JSON body -> validated columns -> predictions (and probabilities) -> the answer, or an InputError that names the
problem."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fin_behavior.serving.bundle import Bundle
from fin_behavior.serving.raw_records import RAW_NAME
from fin_behavior.serving.validation import decode

_SHOWN_VALUE = 64  # characters of an unknown category value echoed back


@dataclass(frozen=True)
class Scored:
    answer: dict[str, Any]
    rows: int
    unknown: dict[str, int]  # field -> records whose value the model never saw (scored as unknown)
    # What the prediction log keeps when the request came in another protocol (oip.py): the records and the
    # /score answer, the one form the monitor reads. None: the request and the answer as sent.
    logged_request: bytes | None = None
    logged_answer: bytes | None = None


def score_request(bundle: Bundle, raw: bytes | str, max_rows: int, model_version: str) -> Scored:
    return score_records(bundle, decode(raw), max_rows, model_version)


def score_records(bundle: Bundle, body: Any, max_rows: int, model_version: str) -> Scored:
    """`body` (records, or any body form validation.records_of takes) scored by the bundle."""
    parsed = bundle.schema.parse(body, max_rows)
    predictions, probabilities = bundle.predict(parsed.columns)
    answer: dict[str, Any] = {"predictions": predictions}
    if probabilities is not None:
        answer["probabilities"] = probabilities
    answer["model_version"] = model_version
    if parsed.ignored is not None:
        answer["ignored_columns"] = parsed.ignored
    unknown: dict[str, int] = {}
    if parsed.unknown:
        named = RAW_NAME if parsed.ignored is not None else {}  # a raw record's fields by their raw names
        answer["unknown_categories"] = [
            {"record": i, "field": named.get(name, name), "value": value[:_SHOWN_VALUE]}
            for i, name, value in parsed.unknown
        ]
        for _, name, _ in parsed.unknown:
            unknown[name] = unknown.get(name, 0) + 1
    return Scored(answer, parsed.rows, unknown)
