"""The scoring service and what it needs; runs inside a serving environment (no Dagster, no MLflow)."""
