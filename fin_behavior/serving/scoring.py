"""One scoring request, the same wherever the model serves (the local service and Azure ML's score.py):
JSON body -> validated columns -> probabilities -> the answer, or an InputError that names the field."""

from __future__ import annotations

import json
from typing import Any

from fin_behavior.serving.bundle import Bundle
from fin_behavior.serving.validation import InputError, parse


def _reject_constant(token: str) -> Any:
    raise InputError(422, f"{token} is not a valid number here; send finite numbers only")


def score_request(bundle: Bundle, raw: bytes | str, max_rows: int, model_version: str) -> tuple[dict[str, Any], int]:
    """(answer, number of rows scored)."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(400, f"body is not valid JSON: {exc}") from None
    columns = parse(body, bundle.info.features, max_rows)
    proba = bundle.predict_proba(columns)
    threshold = bundle.info.decision_threshold
    answer = {
        "predictions": [int(p >= threshold) for p in proba],
        "probabilities": [round(float(p), 6) for p in proba],
        "model_version": model_version,
    }
    return answer, len(proba)
