"""A service's standard output sorted back into the files the monitor reads (monitoring/collect.py): decisions,
their inputs and the labels posted to it, each line whole whatever a client's body holds."""

from __future__ import annotations

import json

from fin_behavior.monitoring.collect import write_split
from fin_behavior.monitoring.window import read_window
from fin_behavior.serving.feedback import FeedbackLog, parse_body
from fin_behavior.serving.prediction_log import PredictionLog


def test_a_body_holding_unicode_line_separators_stays_one_line(tmp_path):
    """JSON lets a string hold U+2028, U+0085 and the like unescaped, and the service logs a body as it came: the
    collector splits lines at newlines only (it split at those too, cutting the line and losing the decision's
    inputs)."""
    written = tmp_path / "pod"
    log = PredictionLog(written / "pod.jsonl", "3", 1.0, 1 << 30, 2)
    for n, city in enumerate(["Lisbon", "Lis\u2028bon", "Lis\u0085bon\u2029", "x\x1c\x1d\x1ey"]):
        body = json.dumps([{"age": 30, "city": city}], ensure_ascii=False).encode()
        answer = json.dumps({"probabilities": [0.5], "model_version": "3", "request_id": f"r{n}"}).encode()
        log.write(0.01, 200, 1, body, {}, answer, f"r{n}", client="c0ffee000001")
    log.close()
    feedback = FeedbackLog(written / "pod.jsonl", 1 << 30, 2)
    feedback.append(parse_body(b'{"labels": [{"request_id": "r1", "label": 1}]}', 1e9), 1e9, "c0ffee000001")
    stdout = "INFO serving model version 3\r\n" + "".join(
        path.read_text(encoding="utf-8") for path in sorted(written.rglob("*.jsonl"))
    )

    collected = tmp_path / "collected"
    assert write_split(stdout, collected, "pod-0") == (4, 4, 1)
    window = read_window(collected, 0, 4e9, max_sampled=100)
    columns, _ = window.versions["3"].sample(["age", "city"])
    assert sorted(columns["city"]) == sorted(["Lisbon", "Lis\u2028bon", "Lis\u0085bon\u2029", "x\x1c\x1d\x1ey"])
