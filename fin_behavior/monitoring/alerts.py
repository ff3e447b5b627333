"""Alerts: a failed monitoring check posts a JSON message to a webhook (Slack's incoming-webhook body, `text`,
with the figures beside it for other receivers), at most once per check and version per window, so a
condition that lasts does not page every few minutes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from fin_behavior.outcome import Outcome
from fin_behavior.records import read_json, write_json


@dataclass(frozen=True)
class Alert:
    check: str
    version: str
    outcome: Outcome
    run_url: str

    def body(self) -> dict:
        o = self.outcome
        return {
            "text": f":rotating_light: fin_behavior model v{self.version}: {self.check} failed: {o.message}"
            + (f"\n<{self.run_url}|the monitoring run>" if self.run_url else ""),
            "check": self.check,
            "model_version": self.version,
            "actual": o.actual,
            "threshold": o.threshold,
            "run_url": self.run_url,
        }


def send(url: str, alerts: list[Alert], sent_file: Path, quiet_seconds: float, log=print) -> list[str]:
    """Post each alert not already posted for the same check and version within `quiet_seconds`; returns what
    was posted. A receiver that fails is logged, not fatal: monitoring goes on, and the alert is tried again
    on the next run."""
    try:
        sent = read_json(sent_file)
    except (OSError, ValueError):
        sent = {}
    now, posted = time.time(), []
    for alert in alerts:
        key = f"{alert.version}/{alert.check}"
        if now - sent.get(key, 0.0) < quiet_seconds:
            continue
        try:
            response = httpx.post(url, json=alert.body(), timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log(f"alert for {key} not delivered to the webhook: {exc}")
            continue
        sent[key] = now
        posted.append(key)
    sent_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(sent_file, sent)
    return posted
