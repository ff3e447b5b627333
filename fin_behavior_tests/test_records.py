"""The typed records: one reader and writer each, and what "approved" means."""

from __future__ import annotations

import pytest

from fin_behavior.records import Evidence, FeatureSpec, ModelInfo, NotApprovedError, TrainingRecord, Verdict


def _verdict(check: str, blocking: bool, passed: bool) -> Verdict:
    return Verdict(check, blocking, passed, 0.7, 0.75, f"{check} message")


def test_approved_means_every_blocking_check_ran_and_passed():
    assert Evidence("s", "v", [_verdict("a", True, True), _verdict("b", False, False)]).approved
    assert not Evidence("s", "v", [_verdict("a", True, True), _verdict("b", True, False)]).approved
    assert not Evidence("s", "v", [_verdict("b", False, True)]).approved  # no blocking verdict: no evidence
    assert not Evidence("s", "v", []).approved


def test_require_names_the_failed_check_its_number_and_what_to_do():
    failed = Evidence("trained_model", "abc", [_verdict("roc_auc_gate", True, False), _verdict("x", True, True)])
    with pytest.raises(NotApprovedError) as raised:
        failed.require("Retrain on data with signal.")
    message = str(raised.value)
    assert "trained_model abc failed roc_auc_gate (0.7 vs 0.75: roc_auc_gate message)" in message
    assert "x (" not in message and message.endswith("Retrain on data with signal.")


def test_records_round_trip_through_their_files(tmp_path):
    evidence = Evidence("s", "v", [_verdict("a", True, True)])
    evidence.write(tmp_path)
    assert Evidence.read(tmp_path) == evidence

    info = ModelInfo(
        "local", "onnx", "fp", {"scikit-learn": "1.8.0"}, {"scikit-learn": "1.9.1"}, True,
        [FeatureSpec("age", "float"), FeatureSpec("city", "string", ["Austin"])],
        "HighAmount", 0.31, "t", "d", "2026-11-29T00:00:00+00:00", {"model.onnx": "ab" * 32},
    )  # fmt: skip
    info.write(tmp_path)
    again = ModelInfo.read(tmp_path)
    assert again == info and again.features[1].categories == ["Austin"] and again.digest == info.digest
    assert ModelInfo.read(tmp_path).digest != ModelInfo(**{**info.__dict__, "sha256": {"model.onnx": "0"}}).digest


def test_a_record_written_by_a_newer_version_is_still_read():
    payload = {f: 0 for f in TrainingRecord.__dataclass_fields__} | {"version": "v", "added_later": True}
    assert TrainingRecord.from_dict(payload).version == "v"
