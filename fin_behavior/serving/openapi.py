"""The OpenAPI document of the scoring service, derived from the served model's features."""

from __future__ import annotations

from typing import Any

from fin_behavior.records import FeatureSpec


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


def openapi_schema(features: list[FeatureSpec], max_rows: int) -> dict[str, Any]:
    record = {"$ref": "#/components/schemas/Record"}
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
            "schemas": {"Record": _record_schema(features)},
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
