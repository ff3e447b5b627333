"""Which experiment a challenger comparison judges (deploy/challengers.py `latest_experiment`): read from the
platform's history as recorded, its design, when its traffic began and when it ended; a record it cannot read is
passed over."""

from __future__ import annotations

import json

from fin_behavior.deploy.challengers import latest_experiment
from fin_behavior.governance import audit
from fin_behavior.settings import get_settings


def _started(history: audit.History, version: str, mode: object, champion: str = "1", **details) -> dict:
    return history.append(audit.CHALLENGER_STARTED, "m", version, "alice", mode=mode, champion=champion, **details)


def test_the_latest_experiment_of_the_two_versions_with_its_traffic_s_start_and_its_end(isolated_settings):
    history = audit.History.of(get_settings())
    _started(history, "2", "shadow", traffic_from=1_000.0)
    history.append(audit.CHALLENGER_STOPPED, "m", "2", "alice")
    split = _started(history, "2", "split", traffic_from=2_000.5)
    _started(history, "3", "shadow", champion="2")  # another pair of versions: not this one's
    _started(history, "2", "shadow", champion="9")
    running = latest_experiment(get_settings(), "m", "1", "2")
    assert running is not None and (running.mode, running.started) == ("split", 2_000.5)
    # ended when another experiment of the model began (v3's, after it)
    assert running.ended is not None and running.ended >= _seconds(split["time"])
    assert latest_experiment(get_settings(), "m", "2", "1") is None  # the same versions swapped: never ran
    assert latest_experiment(get_settings(), "other", "1", "2") is None


def test_a_record_it_cannot_read_is_passed_over_and_a_time_without_offset_is_utc(isolated_settings):
    history = audit.History.of(get_settings())
    good = _started(history, "2", "shadow")
    history.append(audit.CHALLENGER_STOPPED, "m", "2", "alice")
    for odd in ({"mode": None}, {"mode": "mirror"}):
        _started(history, "2", **odd)
    with history.path.open("a") as out:  # records from an edited or older history (read, never trusted)
        for record in (
            {"event": audit.CHALLENGER_STARTED, "model": "m", "version": "2", "details": "x"},
            {"event": audit.CHALLENGER_STARTED, "model": "m", "version": "2", "details": {"champion": "1"}},
            {"event": audit.CHALLENGER_STARTED, "model": "m", "version": "2", "time": "yesterday",
             "details": {"champion": "1", "mode": "split"}},
        ):  # fmt: skip
            out.write(json.dumps(record) + "\n")
    found = latest_experiment(get_settings(), "m", "1", "2")
    assert found is not None and found.mode == "shadow" and found.started == _seconds(good["time"])
    assert found.ended is not None and found.ended >= found.started  # it was stopped

    with history.path.open("a") as out:
        naive = {"event": audit.CHALLENGER_STARTED, "model": "m", "version": "2", "time": "2026-12-07T12:00:00.000",
                 "details": {"champion": "1", "mode": "split"}}  # fmt: skip
        out.write(json.dumps(naive) + "\n")
    latest = latest_experiment(get_settings(), "m", "1", "2")
    assert latest is not None and (latest.mode, latest.started, latest.ended) == ("split", 1_796_644_800.0, None)


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
