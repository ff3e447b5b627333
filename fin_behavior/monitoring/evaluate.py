"""One monitoring pass: the window read from the prediction log, each version judged against its profile."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fin_behavior.monitoring.profile import ReferenceProfile
from fin_behavior.monitoring.quality import Quality, judge
from fin_behavior.monitoring.window import VersionTraffic, Window, read_window
from fin_behavior.settings import Settings


def evaluate(
    settings: Settings,
    directory: Path,
    profile_of: Callable[[str], ReferenceProfile | None],
    now: float | None = None,
    since: float | None = None,
) -> tuple[Window, dict[str, Quality]]:
    """The last `monitor_window_minutes` of the log (or since `since`); every version seen in it, judged."""
    until = time.time() if now is None else now
    since = until - settings.monitor_window_minutes * 60 if since is None else since
    window = read_window(directory, since, until, settings.monitor_max_sampled)
    return window, {v: judge(traffic, profile_of(v), settings) for v, traffic in window.versions.items()}


def judge_quiet(version: str, settings: Settings) -> Quality:
    """A version with no request in the window: nothing to measure, and the checks say so."""
    return judge(VersionTraffic(version), None, settings)
