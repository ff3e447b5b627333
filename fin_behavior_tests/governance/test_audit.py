"""The history is a hash chain: each way of tampering with the file is caught and named at its first record,
and a rewrite or a cut tail is caught against the heads MLflow recorded."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from fin_behavior.governance import audit


@pytest.fixture
def history(tmp_path: Path) -> audit.History:
    history = audit.History(tmp_path / "audit")
    for n, event in enumerate([audit.REGISTERED, audit.APPROVED, audit.DEPLOY_STARTED, audit.DEPLOY_SUCCEEDED]):
        history.append(event, "m", "1", "alice" if n != 1 else "bob", step=n)
    history.append(audit.ALIAS_MOVED, "m", "1", "alice", alias="production", moved_from=None)
    history.append(audit.ENDPOINT_STOPPED, "m", "1", "carol")
    return history


def _lines(history: audit.History) -> list[str]:
    return history.path.read_text().splitlines()


def _write(history: audit.History, lines: list[str]) -> None:
    history.path.write_text("\n".join(lines) + "\n")


def _head(history: audit.History, seq: int) -> audit.Anchor:
    record = history.records()[seq - 1]
    return audit.Anchor(seq, record["hash"], "m v1")


def _problem(history: audit.History, anchors=()) -> str:
    verdict = audit.verify(history.path, anchors)
    assert not verdict.ok
    return verdict.problems[0]


def test_an_untouched_chain_verifies_with_its_anchors(history):
    records = history.records()
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev"] == audit.GENESIS and all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    verdict = audit.verify(history.path, [_head(history, 5)])
    assert verdict.ok and verdict.records == 6, verdict.problems


def test_an_edited_field_is_named(history):
    lines = _lines(history)
    record = json.loads(lines[1])
    record["actor"] = "alice"  # the approval made to look like the author's own
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    _write(history, lines)
    assert _problem(history) == "record 2 (line 2) was edited: its content does not match its hash"


def test_an_edited_record_with_its_hash_recomputed_breaks_the_next_link(history):
    lines = _lines(history)
    record = json.loads(lines[1])
    record["details"]["step"] = 99
    record["hash"] = audit.record_hash(record)
    lines[1] = json.dumps(record)
    _write(history, lines)
    assert _problem(history).startswith("record 3 (line 3) does not follow the record before it")


def test_a_deleted_record_is_named(history):
    lines = _lines(history)
    _write(history, lines[:2] + lines[3:])
    assert _problem(history) == "record 3 before line 3 (record 4) was deleted"


def test_an_inserted_record_is_named(history):
    lines = _lines(history)
    forged = json.loads(lines[2]) | {"actor": "mallory", "event": audit.APPROVED}  # a well-formed copy of record 3
    forged["hash"] = audit.record_hash(forged)
    _write(history, [*lines[:3], json.dumps(forged), *lines[3:]])
    assert _problem(history) == "record 3 appears twice (lines 3 and 4): one of them was inserted"


def test_an_inserted_record_with_a_number_of_its_own_is_named(history):
    lines = _lines(history)
    forged = json.loads(lines[2]) | {"seq": 99, "actor": "mallory"}
    forged["hash"] = audit.record_hash(forged)
    _write(history, [*lines[:3], json.dumps(forged), *lines[3:]])
    assert _problem(history).startswith("record 99 (line 4) was inserted")


def test_two_swapped_records_are_named(history):
    lines = _lines(history)
    lines[2], lines[3] = lines[3], lines[2]
    _write(history, lines)
    assert _problem(history) == "record 4 (line 3) comes before record 3: records were reordered"


def test_a_cut_tail_is_said_against_the_head_recorded_in_mlflow(history):
    anchor = _head(history, 5)
    _write(history, _lines(history)[:3])
    assert audit.verify(history.path).ok  # the file alone cannot tell
    assert _problem(history, [anchor]) == (
        "the tail was cut: MLflow recorded record 5 as the head at m v1, but the history ends at record 3"
    )


def test_a_chain_rewritten_whole_is_caught_by_its_anchor(history):
    anchor = _head(history, 5)
    records = history.records()
    records[0]["actor"] = "someone else"
    previous = audit.GENESIS
    for record in records:  # every hash recomputed: the file is consistent again
        record["prev"] = previous
        record["hash"] = previous = audit.record_hash(record)
    _write(history, [json.dumps(r) for r in records])
    assert audit.verify(history.path).ok
    assert _problem(history, [anchor]).startswith("record 5 differs from the head MLflow recorded at m v1")


def test_a_line_that_is_not_a_record_is_named(history):
    lines = _lines(history)
    lines[4] = "{not json"
    _write(history, lines)
    assert _problem(history) == "line 5 is not a record of the history: it was edited (or written by hand)"


def test_production_intervals_follow_the_alias_moves(tmp_path):
    history = audit.History(tmp_path / "audit")
    for version, who in (("1", "alice"), ("2", "bob"), ("1", "carol")):
        history.append(audit.ALIAS_MOVED, "m", version, who, alias="production")
        history.append(audit.ALIAS_MOVED, "m", version, who, alias="previous")  # not production: ignored
    spans = audit.production_intervals(history.records())
    assert [(s.version, s.actor) for s in spans] == [("1", "alice"), ("2", "bob"), ("1", "carol")]
    assert spans[0].until == spans[1].since and spans[1].until == spans[2].since and spans[2].until is None


def test_since_must_be_a_date(tmp_path):
    with pytest.raises(ValueError, match="--since 'yesterday' is not a date or time"):
        audit.parse_since("yesterday")
    assert audit.parse_since("2026-12-07") == audit.parse_since("2026-12-07T00:00:00+00:00")


def test_with_an_artifact_store_each_append_is_copied_there(tmp_path):
    store = tmp_path / "store"
    history = audit.History(tmp_path / "var" / "audit", mirror_url=store.as_uri())
    history.append(audit.APPROVED, "m", "1", "bob", reason="ok")
    history.append(audit.ALIAS_MOVED, "m", "1", "bob", alias="production")
    assert (store / "audit" / "history.jsonl").read_text() == history.path.read_text()
    assert audit.verify(store / "audit" / "history.jsonl").ok


def test_a_failed_blocking_check_is_a_record_and_a_passed_one_is_not(monkeypatch):
    from fin_behavior.defs.checks import evidence_results
    from fin_behavior.settings import get_settings
    from fin_behavior_tests.helpers import evidence

    monkeypatch.setenv("FIN_BEHAVIOR_ACTOR", "dana")
    get_settings.cache_clear()
    evidence_results("trained_model", evidence("trained_model", "a1"))
    results = evidence_results("trained_model", evidence("trained_model", "a2", passed=False))
    assert [r.passed for r in results] == [False]
    (record,) = audit.History.of(get_settings()).records()
    assert (record["event"], record["actor"], record["version"]) == (audit.GATE_FAILED, "dana", None)
    assert record["details"] == {"stage": "trained_model", "attempt": "a2", "failed": ["gate: as set by the test"]}
