"""Approvals (four eyes) and the tamper-evident history of every decision about a model: domain code, no
Dagster (docs/governance.md)."""
