"""The result of one quality check or gate: pass/fail with the number next to its bar."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    passed: bool
    actual: float | int | str
    threshold: float | int | str
    message: str
