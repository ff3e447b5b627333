"""Explanations over real HTTP, from the scoring service running in the local serving environment (shap installed
there): exact contributions that add up to the probability the service answered, reasons that name the column
that decided, every way a logged decision cannot be explained answered as a JSON 4xx/5xx saying which, and a
burst of explanations answered 429 while /score goes on unaffected."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from fin_behavior.serving.prediction_log import PredictionLog, client_id
from fin_behavior_tests.serving_fixtures import start_service

ROWS = 200


@pytest.fixture(scope="module")
def scored(service, bundle) -> tuple[list[dict], dict]:
    """200 hold-out records scored in one request under a known id, and the answer."""
    records = bundle[1][:ROWS]
    assert len(records) == ROWS
    with service.client() as client:
        answer = client.post("/score", json=records, headers={"X-Request-ID": "holdout-200"}, timeout=60)
    assert answer.status_code == 200, answer.text
    return records, answer.json()


@pytest.fixture(scope="module")
def explained(service, scored) -> dict:
    with service.client() as client:
        answer = client.get("/explain/holdout-200", timeout=120)  # the first starts the worker process
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_contributions_add_up_to_the_probability_the_service_answered(service, bundle, scored, explained):
    records, answer = scored
    features = list(records[0])
    assert explained["request_id"] == "holdout-200" and explained["model_version"] == "7"
    assert explained["scale"] == "probability"  # what the contributions add up to
    rows = explained["rows"]
    assert [row["probability"] for row in rows] == answer["probabilities"]
    for row in rows:
        assert list(row["contributions"]) == features  # one per column the client sent, encoded parts summed
        total = row["base_value"] + sum(row["contributions"].values())
        assert abs(total - row["probability"]) <= 1e-6, (total, row["probability"])
    assert len({row["base_value"] for row in rows}) == 1 and 0 < rows[0]["base_value"] < 1
    moved = np.array([[abs(v) for v in row["contributions"].values()] for row in rows]).mean(axis=0)
    assert (moved > 0).sum() >= len(features) // 2  # not a vector of zeros that sums up by luck

    # POST /explain with the same records answers the same, directly
    with service.client() as client:
        posted = client.post("/explain", json=records, timeout=120)
    assert posted.status_code == 200, posted.text
    for logged, direct in zip(rows, posted.json()["rows"], strict=True):
        assert direct["probability"] == logged["probability"]
        assert direct["contributions"] == pytest.approx(logged["contributions"], abs=1e-12)


def test_reasons_rank_columns_by_their_contribution_and_say_it(scored, explained):
    records, _ = scored
    for record, row in zip(records, explained["rows"], strict=True):
        reasons = row["reasons"]
        assert len(reasons) == 4
        sizes = [abs(r["contribution"]) for r in reasons]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] == max(abs(v) for v in row["contributions"].values())
        for reason in reasons:
            assert reason["contribution"] == row["contributions"][reason["column"]]
            assert reason["value"] == record[reason["column"]]
            verb = "raised" if reason["contribution"] > 0 else "lowered"
            assert reason["text"].startswith(f"{reason['column']} ")
            assert f" {verb} the probability by " in reason["text"]


def test_the_top_reason_of_a_row_extreme_in_one_column_names_that_column(service, scored, explained):
    """The column that matters most on the hold-out, pushed in its most ordinary row (the one no column moves
    much) to the value that raised the probability most anywhere: that row's first reason names it, as raising
    the probability."""
    records, _ = scored
    rows = explained["rows"]
    features = list(records[0])
    numeric = [f for f in features if isinstance(records[0][f], int | float)]
    mean_moved = {f: np.mean([abs(row["contributions"][f]) for row in rows]) for f in numeric}
    column = max(mean_moved, key=mean_moved.__getitem__)
    # the value of that column which raised the probability most anywhere in the hold-out
    best = max(range(ROWS), key=lambda i: rows[i]["contributions"][column])
    extreme_value = records[best][column]
    calmest = min(range(ROWS), key=lambda i: max(abs(v) for v in rows[i]["contributions"].values()))
    extreme = records[calmest] | {column: extreme_value}
    with service.client() as client:
        answer = client.post("/explain?top=2", json=extreme, timeout=60)
    assert answer.status_code == 200, answer.text
    row = answer.json()["rows"][0]
    assert len(row["reasons"]) == 2
    assert row["reasons"][0]["column"] == column and row["reasons"][0]["contribution"] > 0, (column, row["reasons"])
    assert row["probability"] > rows[calmest]["probability"]


def test_what_cannot_be_explained_is_a_json_answer_that_says_why(service, bundle, scored, tmp_path):
    record = bundle[1][0]
    with service.client() as client:
        client.timeout = httpx.Timeout(60)  # run alone, its first explanation starts the worker (~5-10 s here)
        unknown = client.get("/explain/never-sent-1")
        not_an_id = client.get("/explain/has%20space")
        refused = client.post("/score", json={"age": "x"}, headers={"X-Request-ID": "refused-1"})
        bad_top = client.get("/explain/holdout-200?top=0")
        bad_body = client.post("/explain", json={"age": "x"})
        too_many = client.post("/explain", json=[record] * 201)
        malformed = client.post("/explain", content=b'{"age": 4', headers={"content-type": "application/json"})
        oversized = client.post("/explain", content=b"[" + b" " * (1 << 20) + b"]")
        long_id = client.get("/explain/" + "x" * 5_000)
        bad_client_id = client.post("/explain", json=record, headers={"X-Request-ID": "no spaces"})
    assert refused.status_code == 422
    time.sleep(0.6)
    with service.client() as client:
        not_scored = client.get("/explain/refused-1")
    wrong_key = service.client(key="wrong-key-wrong-key-wrong").get("/explain/holdout-200")
    assert unknown.status_code == 404 and "no request 'never-sent-1'" in unknown.json()["error"]
    assert not_an_id.status_code == 404 and "not a request id" in not_an_id.json()["error"]
    assert not_scored.status_code == 404 and "answered 422, not scored" in not_scored.json()["error"]
    assert bad_top.status_code == 422 and "top must be" in bad_top.json()["error"]
    assert bad_body.status_code == 422 and "'age' must be a number" in bad_body.json()["error"]
    assert too_many.status_code == 413 and "at most 200" in too_many.json()["error"]
    assert wrong_key.status_code == 401 and "API key" in wrong_key.json()["error"]
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]
    assert oversized.status_code == 413 and "byte limit" in oversized.json()["error"]
    assert long_id.status_code == 404 and len(long_id.json()["error"]) < 200
    assert bad_client_id.status_code == 400 and "1 to 64 characters" in bad_client_id.json()["error"]
    # every refusal names its request as the service's other answers do: the decision asked about or the request's own
    # id, and a fresh one in place of what cannot be an id
    for answer in (unknown, not_scored, bad_top, bad_body, too_many, wrong_key, malformed, oversized):
        assert answer.json()["request_id"] == answer.headers["X-Request-ID"], answer.text
    assert unknown.json()["request_id"] == "never-sent-1" and wrong_key.json()["request_id"] == "holdout-200"
    for fresh in (not_an_id, long_id, bad_client_id):
        assert fresh.headers["X-Request-ID"] == fresh.json()["request_id"], fresh.text
        assert re.fullmatch("[0-9a-f]{32}", fresh.json()["request_id"])

    # a decision of another version, written by the other color's writer into the same directory
    other = PredictionLog(service.predictions.with_name("green.jsonl"), "6", 1.0, 1 << 20, 2)
    response = json.dumps({"predictions": [0], "probabilities": [0.1], "model_version": "6"}).encode()
    mine = client_id(service.key.encode())  # this client's decision, answered by the other color
    other.write(0.001, 200, 1, json.dumps(record).encode(), {}, response, "scored-by-v6", client=mine)
    other.close()
    with service.client() as client:
        elsewhere = client.get("/explain/scored-by-v6")
    assert elsewhere.status_code == 404 and "answered by model version 6, not the version 7" in elsewhere.text


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def test_a_request_whose_inputs_were_not_sampled_says_so_and_the_worker_ends_with_the_service(
    serving_env, bundle, tmp_path
):
    service = start_service(serving_env, bundle[0], tmp_path, "--log-sample-rate", "0")
    try:
        with service.client() as client:
            assert client.post("/score", json=bundle[1][0], headers={"X-Request-ID": "unsampled-1"}).status_code == 200
            time.sleep(0.6)
            answer = client.get("/explain/unsampled-1", timeout=60)
        workers = _children(service.process.pid)
    finally:
        service.process.kill()  # the hardest way to go: no shutdown code runs in the service
        service.process.wait(10)
    assert answer.status_code == 404 and "inputs were not sampled" in answer.json()["error"], answer.text
    assert workers  # the explanation worker (and multiprocessing's resource tracker)
    deadline = time.monotonic() + 10
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(workers), "the explanation worker outlived its service"


def test_a_burst_of_explanations_is_refused_429_and_scoring_is_not_delayed(service, bundle, explained):
    """Twelve clients with one key ask for 200-row explanations at once while one client scores single rows: at
    most half of `explain_max_pending` (4) are accepted (one key's share), the rest get 429 with Retry-After at
    once, and /score goes on answering while the explanations run (in the scoring process they would hold it for
    as long as each explanation takes)."""
    records = bundle[1][:ROWS]
    outcomes: list[tuple[int, float, str | None]] = []
    scores: list[tuple[int, float, float]] = []  # status, latency, when it was answered
    burst_over = threading.Event()

    def explain() -> None:
        started = time.perf_counter()
        with service.client() as client:
            answer = client.post("/explain", json=records, timeout=120)
        outcomes.append((answer.status_code, time.perf_counter() - started, answer.headers.get("Retry-After")))

    def score() -> None:
        with service.client() as client:
            while not burst_over.is_set():
                started = time.perf_counter()
                status = client.post("/score", json=records[0]).status_code
                scores.append((status, time.perf_counter() - started, time.perf_counter()))

    scorer = threading.Thread(target=score)
    scorer.start()
    time.sleep(0.5)
    clients = [threading.Thread(target=explain) for _ in range(12)]
    burst = time.perf_counter()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    burst_over.set()
    scorer.join()

    accepted = [seconds for status, seconds, _ in outcomes if status == 200]
    refused = [(seconds, retry) for status, seconds, retry in outcomes if status == 429]
    assert len(accepted) + len(refused) == 12 and 1 <= len(accepted) <= 2, outcomes
    assert all(retry == "1" for _, retry in refused)
    assert max(seconds for seconds, _ in refused) < max(accepted)  # refused at once, not queued behind them
    assert scores and all(status == 200 for status, _, _ in scores)
    # while the explanations were being computed (0.15 s to 2 s here, as loaded as the machine is), /score kept
    # answering, and no score waited as long as an explanation took
    during = [latency for _, latency, at in scores if burst < at < burst + max(accepted)]
    assert len(during) >= 5, (len(during), accepted)
    assert max(latency for _, latency, _ in scores) < max(accepted), (max(scores, key=lambda s: s[1]), accepted)


def test_the_command_line_prints_the_reasons_of_a_request(service, explained, tmp_path, capsys):
    from fin_behavior.cli import main

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [service.key]}))
    common = ["--url", service.url, "--key-file", str(keys)]
    assert main(["explain", "holdout-200", "--top", "2", *common]) == 0
    printed = capsys.readouterr().out.splitlines()
    first = explained["rows"][0]
    assert printed[0] == "request holdout-200, model version 7"
    assert printed[1] == f"row 0: probability {first['probability']:.4f} (base value {first['base_value']:.4f})"
    assert printed[2].endswith(first["reasons"][0]["text"]) and printed[3].endswith(first["reasons"][1]["text"])
    assert len(printed) == 1 + 3 * len(explained["rows"])

    assert main(["explain", "never-sent-2", *common]) == 1
    assert "404: no request 'never-sent-2'" in capsys.readouterr().err


def test_the_bundle_ships_its_global_view_in_the_same_units(bundle, explained):
    """global_importance.json (mean |contribution| per column over the hold-out, computed when the bundle was
    built in the serving environment) ranks columns as the service's own explanations of hold-out rows do."""
    shipped = json.loads((bundle[0] / "global_importance.json").read_text())
    columns = shipped["columns"]
    assert set(columns) == set(bundle[1][0]) and shipped["rows"] >= ROWS
    assert list(columns.values()) == sorted(columns.values(), reverse=True)
    assert shipped["base_value"] == pytest.approx(explained["rows"][0]["base_value"], abs=1e-12)
    rows = explained["rows"]
    served = {name: np.mean([abs(row["contributions"][name]) for row in rows]) for name in columns}
    top = sorted(served, key=served.__getitem__, reverse=True)[:3]
    assert next(iter(columns)) in top, (list(columns)[:3], top)


def test_a_decision_sent_as_the_bank_s_record_is_explained_by_its_id_and_odd_values_stay_json(service, bundle):
    """A raw-layout record's decision, read back from the log as /score read it; a value JSON cannot spell (a credit
    utilisation of 0/0 when the limit is 0) is null in the reasons, never a 500; `top` takes ASCII digits only."""
    from fin_behavior.records import BundleFiles, read_json

    raw = read_json(bundle[0] / BundleFiles.EXPECTED)["raw_records"][:2]
    with service.client() as client:
        scored = client.post("/score", json=raw, headers={"X-Request-ID": "raw-record-1"})
        assert scored.status_code == 200, scored.text
        time.sleep(0.8)  # the log is written every 0.5 s
        logged = client.get("/explain/raw-record-1", timeout=120)
        assert logged.status_code == 200, logged.text
        assert [row["probability"] for row in logged.json()["rows"]] == scored.json()["probabilities"]
        no_limit = client.post("/explain?top=100", json=[raw[0] | {"Credit Limit": 0}], timeout=120)
        assert no_limit.status_code == 200, no_limit.text
        reasons = {r["column"]: r["value"] for r in no_limit.json()["rows"][0]["reasons"]}
        assert reasons["credit_utilisation"] is None
        for top in ("\u00b2", "\uff11", "1.5"):  # superscript two, fullwidth one: isdigit() takes both
            assert client.get("/explain/raw-record-1", params={"top": top}).status_code == 422


def test_a_body_that_is_not_utf8_is_refused_before_it_reaches_the_log(service):
    with service.client() as client:
        for body in (b'\xef\xbb\xbf{"age": 41}', '{"age": 41}'.encode("utf-16")):
            answer = client.post("/score", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"], answer.text


def test_a_decision_is_explained_only_to_the_client_whose_key_made_it(serving_env, bundle, tmp_path):
    """Request ids are the clients' own and guessable: another client's key finds nothing under that id (as for an
    id never answered), the platform's probe key finds it."""
    other, probe = "another-client-key-0123456789", "the-platforms-probe-key-0123456789"
    service = start_service(serving_env, bundle[0], tmp_path, probe_key=probe, other_keys=(other,))
    try:
        with service.client() as mine, service.client(other) as theirs, service.client(probe) as platform:
            assert mine.post("/score", json=bundle[1][0], headers={"X-Request-ID": "loan-42"}).status_code == 200
            time.sleep(0.6)  # the log is written every 0.5 s
            refused = theirs.get("/explain/loan-42", timeout=60)
            never = theirs.get("/explain/never-answered", timeout=60)
            found = mine.get("/explain/loan-42", timeout=60)
            operator = platform.get("/explain/loan-42", timeout=60)
    finally:
        service.process.terminate()
        service.process.wait(10)
    assert refused.status_code == never.status_code == 404
    assert refused.json()["error"] == never.json()["error"].replace("never-answered", "loan-42")  # nothing told
    assert found.status_code == operator.status_code == 200 and found.json()["rows"] == operator.json()["rows"]
    logged = (tmp_path / "predictions.jsonl").read_text()
    assert other not in logged and service.key not in logged and '"client":"' in logged  # names, never keys


def test_one_key_cannot_take_every_place_and_another_key_is_still_explained(serving_env, bundle, tmp_path):
    """Half of `explain_max_pending` (4) per key: one client's burst of eight 200-row explanations never holds more
    than two places, so another client's two, sent in the same burst, are both explained."""
    other = "another-client-key-0123456789"
    service = start_service(serving_env, bundle[0], tmp_path, other_keys=(other,))
    records = bundle[1][:ROWS]
    answers: dict[str, list[httpx.Response]] = {service.key: [], other: []}

    def ask(key: str) -> None:
        with service.client(key) as client:
            answers[key].append(client.post("/explain", json=records, timeout=120))

    try:
        with service.client() as first:  # the worker process started, so the burst is about places, not start-up
            assert first.post("/explain", json=records[:1], timeout=120).status_code == 200
        threads = [threading.Thread(target=ask, args=(key,)) for key in [service.key] * 8 + [other] * 2]
        for thread in threads:  # the flooding client's first
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        service.process.terminate()
        service.process.wait(10)
    assert [r.status_code for r in answers[other]] == [200, 200]
    refused = [r for r in answers[service.key] if r.status_code != 200]
    assert refused and all(r.status_code == 429 for r in refused)
    assert any("as many as one key may at once" in r.json()["error"] for r in refused)
