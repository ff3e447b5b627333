"""Outcomes joined to decisions, on prediction logs written by the service's own line writer: labels from the
feedback log and from label files, the bad ones counted; realized figures against sklearn's; the checks; the
label-free estimate against what the labels later say; the labelled rows a retrain adds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from fin_behavior.data.columns import FEATURES, KEY, TARGET
from fin_behavior.data.processing import add_labelled_rows
from fin_behavior.monitoring.labels import add_label_file, owned_key, read_labels
from fin_behavior.monitoring.outcomes import join, labelled_rows
from fin_behavior.monitoring.realized import calibrator, estimate, evaluate, roc_auc
from fin_behavior.serving.feedback import FeedbackError, FeedbackLog, parse_body
from fin_behavior.serving.prediction_log import PredictionLog, client_id
from fin_behavior.settings import get_settings

RECORD = {
    "age": 29, "account_balance": 1631.13, "loan_amount": 8942.78, "interest_rate": 7.49, "loan_term": 60,
    "credit_limit": 2700, "credit_card_balance": 1055.89, "minimum_payment_due": 49.19, "rewards_points": 1344,
    "account_age_days": 754, "days_since_last_transaction": 14, "credit_utilisation": 0.391,
    "transaction_month": 6, "transaction_day_of_week": 2, "gender": "Male", "city": "El Paso",
    "account_type": "Savings", "transaction_type": "Transfer", "loan_type": "Personal", "loan_status": "Closed",
    "card_type": "MasterCard", "feedback_type": "Suggestion", "resolution_status": "Resolved",
}  # fmt: skip


def _log_decisions(
    directory: Path, version: str, probabilities: list[list[float]], prefix: str = "r", client: str = ""
) -> list[str]:
    """Scored requests as the service logs them (its own writer), each answer and line carrying its request id, and
    the line the client whose key asked (none: a line from before lines named one)."""
    log = PredictionLog(directory / "blue.jsonl", version, 1.0, 1 << 30, 2)
    ids = []
    for i, answered in enumerate(probabilities):
        request_id = f"{prefix}{i}"
        body = json.dumps([RECORD | {"age": 20 + i % 50}] * len(answered)).encode()
        response = {"predictions": [int(p >= 0.5) for p in answered], "probabilities": answered}
        answer = json.dumps(response | {"model_version": version, "request_id": request_id}).encode()
        log.write(0.001, 200, len(answered), body, {}, answer, request_id, client=client)
        ids.append(request_id)
    log.close()
    return ids


def _post(directory: Path, labels: list[dict], client: str = "") -> None:
    """Labels as POST /feedback writes them, posted with `client`'s key ("": the probe key's, or an old line's)."""
    now = time.time()
    FeedbackLog(directory / "blue.jsonl", 1 << 30, 2).append(
        parse_body(json.dumps({"labels": labels}).encode(), now), now, client
    )


def test_labels_join_their_decisions_and_bad_ones_are_counted_not_fatal(tmp_path):
    logs, folder = tmp_path / "predictions", tmp_path / "ground_truth"
    ids = _log_decisions(logs, "3", [[0.9], [0.1], [0.8, 0.2]])
    _post(logs, [{"request_id": ids[0], "label": 1}, {"request_id": ids[2], "row": 1, "label": 0}])
    _post(logs, [{"request_id": ids[0], "label": 0}])  # a second label for the same decision: the first stands
    _post(logs, [{"request_id": "never-scored", "label": 1}])
    folder.mkdir()
    pd.DataFrame(
        {"request_id": [ids[1], ids[2], "bad id!", ids[1]], "row": [0, 0, 0, 0], "label": [0, 1, 1, 7]}
    ).to_csv(folder / "day1.csv", index=False)

    labels = read_labels(logs, folder)
    assert labels.counts() == {"labels": 5, "invalid": 2, "duplicates": 1, "files": 2}
    joined = join(logs, labels, 0, time.time() + 1)
    decisions = joined.versions["3"]
    assert joined.unknown == 1
    assert list(decisions.probabilities) == [0.9, 0.1, 0.8, 0.2]
    assert list(decisions.labels) == [1, 0, 1, 0]  # the first label of ids[0] (posted before the duplicate)

    outside = join(logs, read_labels(logs, folder), time.time() + 60, time.time() + 120)
    assert outside.versions == {} and outside.unknown == 1  # claimed by their decisions, just not in the window


def test_a_feedback_line_nested_past_the_parser_s_depth_is_counted_invalid_not_fatal(tmp_path):
    """A served model can write its own color's logs: a line nested deeper than json's recursion limit is a bad
    label like any other (it raised RecursionError out of the reader, failing realized_performance)."""
    logs = tmp_path / "predictions"
    ids = _log_decisions(logs, "3", [[0.9]])
    _post(logs, [{"request_id": ids[0], "label": 1}])
    with (logs / "feedback" / "blue.jsonl").open("ab") as log:
        log.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    labels = read_labels(logs, None)
    assert labels.counts() == {"labels": 1, "invalid": 1, "duplicates": 0, "files": 1}
    assert list(join(logs, labels, 0, time.time() + 1).versions["3"].labels) == [1]


A, B = client_id(b"team a's key"), client_id(b"team b's key")  # how the log names two clients' keys


def test_a_label_joins_only_the_decisions_of_the_key_that_posted_it(tmp_path):
    logs, folder = tmp_path / "predictions", tmp_path / "ground_truth"
    mine = _log_decisions(logs, "3", [[0.9], [0.2], [0.7, 0.1]], prefix="a", client=A)
    theirs = _log_decisions(logs, "3", [[0.6]], prefix="b", client=B)
    same_id = _log_decisions(logs, "3", [[0.3]], prefix="s", client=A) + _log_decisions(
        logs, "3", [[0.4]], prefix="s", client=B
    )  # ids are the clients' own: both used "s0"
    _post(logs, [{"request_id": mine[0], "label": 0}, {"request_id": mine[2], "row": 1, "label": 1}], client=B)
    _post(logs, [{"request_id": mine[0], "label": 1}, {"request_id": mine[2], "row": 1, "label": 0}], client=A)
    _post(logs, [{"request_id": theirs[0], "label": 1}, {"request_id": "s0", "label": 0}], client=B)
    _post(logs, [{"request_id": "s0", "label": 1}], client=A)
    _post(logs, [{"request_id": mine[1], "label": 0}])  # the platform's probe key: any decision with the id
    folder.mkdir()  # the bank's own labels: any decision with the id; beside the client's own, the client's stands
    pd.DataFrame({"request_id": [mine[2], mine[0]], "label": [1, 0]}).to_csv(folder / "bank.csv", index=False)

    labels = read_labels(logs, folder)
    assert labels.counts() == {"labels": 10, "invalid": 0, "duplicates": 0, "files": 2}
    joined = join(logs, labels, 0, time.time() + 1)
    decisions = joined.versions["3"]
    assert list(decisions.probabilities) == [0.9, 0.2, 0.7, 0.1, 0.6, 0.3, 0.4] and same_id == ["s0", "s0"]
    assert list(decisions.labels) == [1, 0, 1, 0, 1, 1, 0]  # A's own labels, though B's came first
    # B's two labels for A's decisions count as labels of ids never scored; the bank's label of mine[0], beside A's
    # own, is claimed by no decision (it stays for the next decision of that id)
    assert (joined.matched, joined.unknown, labels.duplicates) == (7, 3, 0)


def test_the_label_reader_sees_the_client_at_c_speed_and_line_by_line(tmp_path):
    logs = tmp_path / "predictions"
    _post(logs, [{"request_id": "r0", "label": 1}, {"request_id": "r1", "row": 2, "label": 0}], client=A)
    _post(logs, [{"request_id": "r0", "label": 0}, {"request_id": "r0", "label": 1}])  # unscoped; a duplicate
    fast = read_labels(logs, None)  # every line the service's: one regular expression
    assert fast.table == {owned_key(A.encode(), b"r0"): 1, owned_key(A.encode(), b"r1#2"): 0, b"r0": 0}
    with (logs / "feedback" / "blue.jsonl").open("a") as log:  # lines of another writer: read one by one
        log.write(json.dumps({"time": 1.0, "client": B, "request_id": "r2", "label": 1}) + "\n")
        log.write(json.dumps({"time": 1.0, "client": "not a client", "request_id": "r3", "label": 1}) + "\n")
    slow = read_labels(logs, None)
    assert slow.table == fast.table | {owned_key(B.encode(), b"r2"): 1}
    assert (fast.duplicates, slow.duplicates, slow.invalid) == (1, 1, 1)


def test_lines_from_before_lines_named_the_client_join_as_they_did(tmp_path):
    """Decision lines and feedback lines without a client: any label of the id, the first one read."""
    logs = tmp_path / "predictions"
    old = _log_decisions(logs, "3", [[0.9], [0.2], [0.4]], prefix="old")
    new = _log_decisions(logs, "3", [[0.8]], prefix="new", client=A)
    _post(logs, [{"request_id": old[0], "label": 1}, {"request_id": new[0], "label": 1}])  # old feedback lines
    _post(logs, [{"request_id": old[1], "label": 0}], client=B)  # posted after the upgrade, for an older decision
    _post(logs, [{"request_id": old[1], "label": 1}], client=A)  # a second label: the first stands, this one stays

    labels = read_labels(logs, None)
    joined = join(logs, labels, 0, time.time() + 1)
    assert list(joined.versions["3"].labels) == [1, 0, -1, 1]
    assert (joined.matched, joined.unknown, labels.duplicates) == (3, 1, 0)


def _rotate(logs: Path) -> None:
    """The color's current log files rotated away (read before the current ones)."""
    for name in ("blue.inputs.jsonl", "blue.jsonl"):
        (logs / name).rename(logs / name.replace(".jsonl", ".1000000000000000000.jsonl"))


def test_a_decision_from_before_lines_named_the_client_never_takes_a_client_s_label_of_its_own_decision(tmp_path):
    """An old decision read first (a rotated file) takes the first client label of its id, and only that one: A's
    own label stays for A's decision of the same id, whichever key posted first."""
    logs = tmp_path / "predictions"
    _log_decisions(logs, "3", [[0.9]], prefix="R")  # from before the upgrade
    _rotate(logs)
    _log_decisions(logs, "3", [[0.8]], prefix="R", client=A)  # A's, with the same id
    _post(logs, [{"request_id": "R0", "label": 0}], client=B)
    _post(logs, [{"request_id": "R0", "label": 1}], client=A)
    labels = read_labels(logs, None)
    joined = join(logs, labels, 0, time.time() + 1)
    assert list(joined.versions["3"].labels) == [0, 1]
    assert (joined.matched, joined.unknown, labels.duplicates) == (2, 0, 0)


def test_a_decision_with_its_own_label_leaves_the_bank_s_label_of_its_id_to_the_next(tmp_path):
    """B scores first with A's (guessable) id and labels its own decision: the bank's label of the id still
    reaches A's decision."""
    logs, folder = tmp_path / "predictions", tmp_path / "ground_truth"
    _log_decisions(logs, "3", [[0.8]], prefix="R", client=B)
    _log_decisions(logs, "3", [[0.9]], prefix="R", client=A)
    _post(logs, [{"request_id": "R0", "label": 1}], client=B)
    folder.mkdir()
    pd.DataFrame({"request_id": ["R0"], "label": [0]}).to_csv(folder / "bank.csv", index=False)
    labels = read_labels(logs, folder)
    joined = join(logs, labels, 0, time.time() + 1)
    assert list(joined.versions["3"].labels) == [1, 0]
    assert (joined.matched, joined.unknown, labels.duplicates) == (2, 0, 0)


def test_a_malformed_post_is_refused_whole_naming_each_entry():
    with pytest.raises(FeedbackError) as refused:
        parse_body(b'{"labels": [{"request_id": "a", "label": 2}, {"request_id": "b", "label": 1, "row": -1}]}', 0)
    message = str(refused.value)
    assert "2 of 2 labels refused, none kept" in message and "labels[0]: label must be 0 or 1, not 2" in message
    assert "labels[1]: row must be an integer >= 0" in message
    with pytest.raises(FeedbackError, match="not valid JSON"):
        parse_body(b"label=1", 0)
    assert parse_body(b'{"labels": [{"request_id": "a", "label": 1, "observed_at": "2026-12-07T08:00:00Z"}]}', 0)[0][
        "observed_at"
    ] == pytest.approx(1796630400.0)


def test_a_label_file_is_added_whole_or_refused_saying_why(tmp_path):
    good = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["a", "b"], "label": [1, 5]}).to_csv(good, index=False)
    target, valid, invalid = add_label_file(good, tmp_path / "gt")
    assert (valid, invalid) == (1, 1) and target.read_bytes() == good.read_bytes()
    wrong = tmp_path / "wrong.csv"
    pd.DataFrame({"id": ["a"], "outcome": [1]}).to_csv(wrong, index=False)
    with pytest.raises(FeedbackError, match=r"has no column\(s\) \['label', 'request_id'\]"):
        add_label_file(wrong, tmp_path / "gt")
    assert [p.name for p in (tmp_path / "gt").iterdir()] == ["labels.csv"]


def test_realized_figures_match_sklearn_and_the_estimate_tracks_them():
    rng = np.random.default_rng(1)
    p = np.round(rng.beta(1, 12, 20_000), 3)  # ties, 5-10 % positives, like the platform's forest
    y = (rng.random(len(p)) < p).astype(float)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    labelled, pending = slice(0, 10_000), slice(10_000, None)
    fitted = calibrator(y[labelled], p[labelled])
    estimated = estimate(p[pending], 0.15, fitted)
    assert estimated["roc_auc"] == pytest.approx(roc_auc_score(y[pending], p[pending]), abs=0.03)
    assert estimated["precision"] == pytest.approx(precision_score(y[pending], p[pending] >= 0.15), abs=0.05)
    assert estimated["recall"] == pytest.approx(recall_score(y[pending], p[pending] >= 0.15), abs=0.05)


def _decisions(tmp_path: Path, flip: bool):
    """4,000 logged decisions with their labels posted, and the validation figures of the same model on an
    independent hold-out drawn the same way (threshold 0.25)."""
    rng = np.random.default_rng(2)
    p = np.round(rng.beta(1, 6, 4_000), 4)
    y = (rng.random(len(p)) < p).astype(int)
    if flip:
        y[:2_000] = 1 - y[:2_000]  # concept drift in one segment: what was a positive is now a negative
    logs = tmp_path / "predictions"
    ids = _log_decisions(logs, "5", [[float(v)] for v in p])
    _post(logs, [{"request_id": i, "label": int(label)} for i, label in zip(ids, y, strict=True)])
    hold_p = np.round(rng.beta(1, 6, 5_000), 4)
    hold_y = rng.random(len(hold_p)) < hold_p
    validation = {"roc_auc": roc_auc_score(hold_y, hold_p), "recall": recall_score(hold_y, hold_p >= 0.25)}
    return logs, validation


def test_labels_as_expected_pass_and_a_flipped_segment_fails_realized_roc_auc(tmp_path):
    settings = get_settings().with_overrides(min_labelled_rows=200, realized_tolerance=0.05)
    logs, validation = _decisions(tmp_path / "ok", flip=False)
    window = evaluate(settings, logs, None, lambda v: (0.25, validation))
    ok = window.results["5"]
    assert all(o.passed for o in ok.checks.values()), {k: o.message for k, o in ok.checks.items()}
    assert ok.figures["coverage"] == 1.0 and abs(ok.figures["roc_auc"] - validation["roc_auc"]) < 0.05
    assert window.label_counts["matched"] == 4_000 and window.label_counts["unknown"] == 0

    logs, validation = _decisions(tmp_path / "flipped", flip=True)
    decayed = evaluate(settings, logs, None, lambda v: (0.25, validation)).results["5"]
    failed = decayed.failed["realized_roc_auc"]
    assert failed.actual < failed.threshold and "decays in production" in failed.message


def test_too_few_labels_give_no_verdict_and_the_pending_window_is_estimated(tmp_path):
    logs = tmp_path / "predictions"
    ids = _log_decisions(logs, "5", [[0.9], [0.1]] * 50)
    _post(logs, [{"request_id": i, "label": int(n % 2 == 0)} for n, i in enumerate(ids[:30])])
    settings = get_settings().with_overrides(min_labelled_rows=200)
    window = evaluate(settings, logs, None, lambda v: (0.5, {"roc_auc": 0.9, "recall": 0.8}))
    realized = window.results["5"]
    coverage = realized.checks["label_coverage"]
    assert not coverage.passed and coverage.actual == 30 and "not enough for a verdict" in coverage.message
    assert (
        realized.checks["realized_roc_auc"].passed
        and "not enough labels" in realized.checks["realized_roc_auc"].message
    )
    assert realized.estimate["rows"] == 70  # the decisions without a label
    delayed = evaluate(settings.with_overrides(label_delay_hours=1), logs, None, lambda v: (0.5, {}))
    assert delayed.results["5"].figures["decisions"] == 0 and delayed.results["5"].figures["pending"] == 100


def test_labelled_decisions_become_training_rows_that_pass_the_dataset_schema(tmp_path):
    logs = tmp_path / "predictions"
    ids = _log_decisions(logs, "5", [[0.9], [0.2, 0.3]])
    _post(logs, [{"request_id": ids[0], "label": 1}, {"request_id": ids[1], "row": 1, "label": 0}])
    rows = labelled_rows(join(logs, read_labels(logs, None), 0, 0, keep_requests=True))
    assert list(rows[KEY]) == [f"{ids[0]}/0", f"{ids[1]}/1"] and list(rows[TARGET]) == [1, 0]
    assert rows.loc[0, "city"] == "El Paso" and rows.loc[1, "age"] == 21.0
    dataset = rows.iloc[:0][[KEY, *FEATURES, TARGET]]
    odd = rows.assign(gender=["Male", "Robot"])  # a category the dataset's schema refuses: left out, counted
    combined, left_out = add_labelled_rows(dataset, odd)
    assert left_out == 1 and list(combined[KEY]) == [f"{ids[0]}/0"]


def test_the_feedback_command_adds_a_label_file_or_says_why_not(tmp_path, isolated_settings, capsys):
    from fin_behavior.cli import main

    good, bad = tmp_path / "outcomes.parquet", tmp_path / "bad.csv"
    pd.DataFrame({"request_id": ["a1", "b2"], "row": [0, 0], "label": [1, 0]}).to_parquet(good)
    pd.DataFrame({"request_id": ["a1"], "label": ["yes"]}).to_csv(bad, index=False)
    assert main(["feedback", str(good)]) == 0
    assert "2 labels of" in capsys.readouterr().out
    assert read_labels(tmp_path / "no-log", isolated_settings / "ground_truth").counts()["labels"] == 2
    assert main(["feedback", str(bad)]) == 2
    assert "none of the 1 rows of bad.csv is a label" in capsys.readouterr().err
