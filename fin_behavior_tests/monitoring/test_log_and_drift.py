"""The prediction log (written as the service writes it, read as the monitor reads it) and the drift statistics,
on DataFrames and temp dirs."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fin_behavior.data.columns import FEATURES
from fin_behavior.data.processing import process_raw_file
from fin_behavior.monitoring.profile import build_profile, drift
from fin_behavior.monitoring.window import read_window
from fin_behavior.serving import prediction_log
from fin_behavior.serving.prediction_log import PredictionLog


@pytest.fixture(scope="module")
def split(banking_csv):
    dataset = process_raw_file(banking_csv, 0.95).dataset
    train, holdout = dataset.iloc[:4_000], dataset.iloc[4_000:]
    return train[list(FEATURES)], holdout[list(FEATURES)]


def _columns(frame) -> dict[str, list]:
    return {name: frame[name].tolist() for name in FEATURES}


def test_the_same_population_does_not_drift_and_a_shifted_one_does(split):
    train, holdout = split
    rng = np.random.default_rng(0)
    profile = build_profile(train, rng.uniform(0, 0.3, 1_000))
    same = drift(profile, _columns(holdout), list(rng.uniform(0, 0.3, len(holdout))))
    assert max(same.features.values()) < 0.1 and same.probability < 0.1, same

    shifted = holdout.assign(age=holdout["age"] + 25, credit_utilisation=holdout["credit_utilisation"] * 2)
    moved = drift(profile, _columns(shifted), list(rng.uniform(0.5, 1.0, len(holdout))))
    assert list(moved.features)[:2] == ["age", "credit_utilisation"]  # named, largest first
    assert moved.features["credit_utilisation"] >= 0.2 and moved.probability >= 0.2
    assert all(score < 0.1 for name, score in moved.features.items() if name not in ("age", "credit_utilisation"))

    unseen = holdout.assign(city="Omaha")  # a city never seen in training: its own bucket, not an error
    assert drift(profile, _columns(unseen), [0.1] * len(holdout)).features["city"] >= 0.2


def _log(tmp_path, **limits) -> PredictionLog:
    options = {"sample_rate": 1.0, "max_bytes": 1 << 20, "keep_files": 8} | limits
    return PredictionLog(tmp_path / "blue.jsonl", "3", **options)


def _write(log: PredictionLog, record: dict, outcome: int = 200, unknown: dict | None = None) -> None:
    response = json.dumps({"predictions": [0], "probabilities": [0.25], "model_version": "3"}).encode()
    log.write(0.002, outcome, 1 if outcome == 200 else 0, json.dumps(record).encode(), unknown or {}, response)


def test_each_line_is_what_its_type_says_in_the_order_the_scanners_read(tmp_path):
    """Every field the writer puts on a line is a key of its TypedDict, in the TypedDict's order (the monitor's
    scanners split a line at its commas); the typed readers take the writer's lines and refuse anything else."""
    log = _log(tmp_path)
    log.write(
        0.002, 200, 1, b'{"age": 30}', {"city": 1}, b'{"probabilities":[0.25]}', request_id="r-1", client="c0ffee"
    )
    log.write(0.002, 200, 1, b'{"age": 30}', {}, b'{"probabilities":[0.5]}', request_id="r-2", probe=True)
    log.close()
    requests = [prediction_log.read_request_line(line) for line in (tmp_path / "blue.jsonl").read_bytes().splitlines()]
    (inputs,) = map(prediction_log.read_inputs_line, (tmp_path / "blue.inputs.jsonl").read_bytes().splitlines())

    declared = list(prediction_log.RequestLine.__annotations__)  # a TypedDict's keys, its bases' first
    assert list(requests[0]) == [k for k in declared if k != "probe"]
    assert list(requests[1]) == [k for k in declared if k not in ("unknown_categories", "client")]  # a probe
    assert list(inputs) == list(prediction_log.InputsLine.__annotations__)
    assert (requests[0]["rows"], requests[0]["unknown_categories"], requests[1]["probe"]) == (1, {"city": 1}, True)
    assert inputs["request"] == {"age": 30} and inputs["response"] == {"probabilities": [0.25]}
    assert (inputs["client"], inputs["request_id"]) == ("c0ffee", "r-1")
    for not_a_line in (b"{not json", b'{"time":1.0,"model_version":"3"}', b"[1, 2]", b"[" * 100_000):
        with pytest.raises(ValueError):
            prediction_log.read_request_line(not_a_line)
        with pytest.raises(ValueError):
            prediction_log.read_inputs_line(not_a_line)


def test_the_log_is_read_back_whole_and_bounded_on_disk(tmp_path, split):
    record = {k: (v.item() if hasattr(v, "item") else v) for k, v in split[1].iloc[0].items()}
    log = _log(tmp_path, max_bytes=5_000, keep_files=2)
    started = time.time()
    for i in range(200):
        _write(log, record, outcome=422 if i % 50 == 0 else 200, unknown={"city": 1} if i < 3 else None)
        if i % 20 == 0:
            log.flush()
    log.close()
    names = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    requests = [n for n in names if ".inputs." not in n]
    inputs = [n for n in names if ".inputs." in n]
    assert len(requests) == 3 and "blue.jsonl" in requests  # the current file and the 2 newest rotated ones
    assert len(inputs) == 3 and "blue.inputs.jsonl" in inputs
    assert all(line.endswith(b"}") for p in tmp_path.glob("*.jsonl") for line in p.read_bytes().splitlines())

    with (tmp_path / "blue.jsonl").open("ab") as torn:  # a line still being written is not read
        torn.write(b'{"time":%.6f,"model_version":"3","latency_ms":1.0,"outcome":200,"rows":1' % time.time())
    window = read_window(tmp_path, started - 1, time.time() + 1, max_sampled=10)
    traffic = window.versions["3"]
    assert traffic.requests < 200 and traffic.requests == window.lines  # the oldest rotated files are gone
    assert traffic.outcomes[422] >= 1 and traffic.outcomes[200] == traffic.requests - traffic.outcomes[422]
    columns, probabilities = traffic.sample(list(FEATURES))
    assert len(probabilities) == 10 and columns["age"] == [record["age"]] * 10  # the reservoir's bound

    later = read_window(tmp_path, time.time() + 10, time.time() + 20, max_sampled=10)
    assert later.versions == {}


def test_sampling_off_logs_no_inputs_and_unknown_categories_are_counted(tmp_path, split):
    record = {k: (v.item() if hasattr(v, "item") else v) for k, v in split[1].iloc[0].items()}
    log = _log(tmp_path, sample_rate=0.0)
    for _ in range(5):
        _write(log, record, unknown={"city": 1, "card_type": 1})
    log.close()
    assert (tmp_path / "blue.inputs.jsonl").read_bytes() == b""  # nothing sampled
    traffic = read_window(tmp_path, 0, time.time() + 1, max_sampled=10).versions["3"]
    assert traffic.logged == 0 and traffic.unknown == {"city": 5, "card_type": 5}
