"""Submitted training scripts: intake, the sandboxed run, verification, the HTTP API (docs/submissions.md)."""
