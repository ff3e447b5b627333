"""The OpenAPI document of the scoring service, derived from the served model's features."""

from __future__ import annotations

from typing import Any

from fin_behavior.records import FeatureSpec
from fin_behavior.serving.raw_records import raw_record_schema


def _record_schema(features: list[FeatureSpec]) -> dict[str, Any]:
    properties: dict[str, dict[str, Any]] = {}
    for feature in features:
        if feature.dtype == "float":
            properties[feature.name] = {"type": "number"}
        else:
            properties[feature.name] = {
                "type": "string",
                **({"enum": feature.categories} if feature.categories else {}),
            }
    return {
        "type": "object",
        "properties": properties,
        "required": [f.name for f in features],
        "additionalProperties": False,
    }


_REQUEST_ID = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
_TOP = {"name": "top", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 4}}
_REASON = {
    "type": "object",
    "properties": {
        "column": {"type": "string"},
        "value": {},
        "contribution": {"type": "number"},
        "text": {"type": "string"},
    },
}
_EXPLANATION = {
    "type": "object",
    "properties": {
        "request_id": _REQUEST_ID,
        "model_version": {"type": "string"},
        "scale": {
            "type": "string",
            "enum": ["probability", "log_odds", "prediction"],
            "description": "What base_value + sum(contributions) adds up to; each row carries it",
        },
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "prediction": {"description": "A submitted model's own predict, as /score answered it"},
                    "probability": {"type": "number"},
                    "log_odds": {"type": "number", "description": "A submitted logistic or boosted classifier's"},
                    "base_value": {"type": "number"},
                    "contributions": {"type": "object", "additionalProperties": {"type": "number"}},
                    "reasons": {"type": "array", "items": _REASON},
                },
            },
        },
    },
}


def _explained(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "200": {
            "description": "Per row: what the model answered, the base value, one contribution per field (they "
            "add up to the answer on the scale named) and the top reasons",
            "content": {"application/json": {"schema": _EXPLANATION}},
        },
        "401": error,
        "422": error,
        "429": {"description": "Too many explanations at once (Retry-After); scoring is not affected"},
        "501": error | {"description": "This model or serving environment cannot be explained, and why"},
    }


def openapi_schema(features: list[FeatureSpec], max_rows: int, raw_record: bool = False) -> dict[str, Any]:
    """`raw_record`: the served bundle also takes the bank's own record (raw_records.py)."""
    record: dict[str, Any] = {"$ref": "#/components/schemas/Record"}
    schemas = {"Record": _record_schema(features)}
    if raw_record:
        schemas["RawRecord"] = raw_record_schema(features)
        record = {"oneOf": [record, {"$ref": "#/components/schemas/RawRecord"}]}
    error = {
        "description": "What was wrong",
        "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fin_behavior scoring service",
            "version": "1",
            "description": "Predicts HighAmount (transaction amount at or above the training data's 95th "
            "percentile) from business-form customer and account features.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "paths": {
            "/score": {
                "post": {
                    "summary": "Score one record, a list of records, or an MLflow dataframe_records / dataframe_split "
                    "body",
                    "security": [{"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        record,
                                        {"type": "array", "items": record, "minItems": 1, "maxItems": max_rows},
                                        {
                                            "type": "object",
                                            "properties": {"dataframe_records": {"type": "array", "items": record}},
                                            "required": ["dataframe_records"],
                                        },
                                        {
                                            "type": "object",
                                            "properties": {
                                                "dataframe_split": {
                                                    "type": "object",
                                                    "properties": {
                                                        "columns": {"type": "array", "items": {"type": "string"}},
                                                        "data": {"type": "array", "items": {"type": "array"}},
                                                    },
                                                }
                                            },
                                            "required": ["dataframe_split"],
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Predictions (1 = HighAmount), probabilities, the model version "
                            "(also in the X-Model-Version header) and the request id (also in the X-Request-ID "
                            "header: the client's own when it sent a valid one)",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "predictions": {"type": "array", "items": {"type": "integer"}},
                                            "probabilities": {"type": "array", "items": {"type": "number"}},
                                            "model_version": {"type": "string"},
                                            "ignored_columns": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                                "description": "raw records: the layout's columns that are not inputs",
                                            },
                                            "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                                        },
                                    }
                                }
                            },
                        },
                        "400": error,
                        "401": error,
                        "413": error,
                        "422": error,
                        "503": {"description": "Model not loaded, or too many requests in flight (Retry-After)"},
                    },
                }
            },
            "/explain": {
                "post": {
                    "summary": "Exact contributions per field and the top reasons, for the records of a /score body",
                    "security": [{"apiKey": []}],
                    "parameters": [_TOP],
                    "requestBody": {
                        "required": True,
                        "description": "what /score takes: records, dataframe_records or dataframe_split",
                        "content": {"application/json": {"schema": {}}},
                    },
                    "responses": _explained(error),
                }
            },
            "/explain/{request_id}": {
                "get": {
                    "summary": "The same for a logged decision, by the request_id its /score answer carried",
                    "security": [{"apiKey": []}],
                    "parameters": [
                        {"name": "request_id", "in": "path", "required": True, "schema": _REQUEST_ID},
                        _TOP,
                    ],
                    "responses": _explained(error)
                    | {"404": error | {"description": "Unknown, not sampled, not scored, or another version's"}},
                }
            },
            "/health": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/ready": {
                "get": {
                    "summary": "Model loaded and verified",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready, with the reason"},
                    },
                }
            },
            "/version": {
                "get": {
                    "summary": "Served model version and package versions",
                    "security": [{"apiKey": []}],
                    "responses": {"200": {"description": "versions"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [{"apiKey": []}],
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
        },
    }
