"""Versions with evidence: only an approved version becomes current, a failed attempt stays inspectable, a
published version never changes, and a pointer is not proof."""

from __future__ import annotations

import pytest

from fin_behavior.records import NotApprovedError
from fin_behavior.storage.store import NoApprovedVersionError, VersionStore
from fin_behavior_tests.helpers import evidence


def _publish(store: VersionStore, version: str, passed: bool, content: bytes = b"model") -> None:
    staging = store.staging(version)
    (staging / "model.bin").write_bytes(content)
    store.publish(staging, evidence("trained_model", version, passed))


def test_a_failed_attempt_is_kept_but_never_becomes_current(tmp_path):
    store = VersionStore(tmp_path / "trained_model")
    _publish(store, "v1", passed=True)
    _publish(store, "v2", passed=False)
    assert store.current_version() == "v1" and store.latest_version() == "v2"
    assert (store.current() / "model.bin").exists()
    assert (store.path("v2") / "model.bin").exists()  # inspectable
    note = store.attempt_note()
    assert "trained_model v2 failed gate (0.1 vs 0.5" in note and "current stays v1" in note
    with pytest.raises(NotApprovedError, match="trained_model v2 failed gate"):
        store.approved("v2")


def test_before_any_approval_nothing_is_current_and_the_error_says_why(tmp_path):
    store = VersionStore(tmp_path / "trained_model")
    with pytest.raises(NoApprovedVersionError, match="no trained_model version has passed"):
        store.current()
    _publish(store, "v1", passed=False)
    with pytest.raises(NoApprovedVersionError, match="the latest attempt: trained_model v1 failed gate"):
        store.current()


def test_a_published_version_never_changes(tmp_path):
    store = VersionStore(tmp_path / "trained_model")
    _publish(store, "v1", passed=True, content=b"first")
    _publish(store, "v1", passed=False, content=b"second")  # same version again: the first one stands
    assert (store.path("v1") / "model.bin").read_bytes() == b"first"
    assert store.evidence("v1").approved and store.current_version() == "v1"
    assert not list(tmp_path.glob("trained_model/.staging-*"))


def test_reusing_an_earlier_version_moves_the_pointers(tmp_path):
    store = VersionStore(tmp_path / "trained_model")
    _publish(store, "v1", passed=True)
    _publish(store, "v2", passed=True)
    assert store.reuse("v1").approved
    assert store.current_version() == store.latest_version() == "v1"


def test_a_pointer_edited_to_a_failed_version_is_refused(tmp_path):
    store = VersionStore(tmp_path / "trained_model")
    _publish(store, "v1", passed=True)
    _publish(store, "v2", passed=False)
    store.pointer.write_text("v2")  # by hand, or by an older tool
    with pytest.raises(NotApprovedError, match="v2 failed gate"):
        store.current()
