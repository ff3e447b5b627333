"""Several hundred hostile and careless requests against the real service: not one 5xx, every answer JSON,
every refusal saying what was wrong, and the service still scoring afterwards."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

NUMERIC_BAD = ["forty", True, None, [1], {"v": 1}, "1e400", ""]
CATEGORY_BAD = [3, None, ["Male"], {"v": "Male"}, True, 1.5, "\ud800", "Oma\udfffha"]  # lone surrogates: not text
CATEGORY_UNSEEN = ["", "x" * 10_000, "Ωmaha", "NULL", "<script>"]  # scored as unknown: 200
PATHS = [
    "/score", "/health", "/ready", "/version", "/metrics", "/openapi.json", "/", "/nope", "/score/", "/SCORE",
    "/score?x=1", "/%2e%2e/%2e%2e/etc/passwd", "/score%00", "/v2/models", "/" + "a" * 4_000,
]  # fmt: skip
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]


@dataclass(frozen=True)
class Hostile:
    name: str
    method: str
    path: str
    content: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    keyed: bool = True


def _post(name: str, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Hostile:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Hostile(name[:60], "POST", "/score", content, headers)


def _corpus(record: dict) -> list[Hostile]:
    good = json.dumps(record)
    cases = [Hostile(f"{m} {p[:40]}", m, p, good.encode() if m == "POST" else b"") for p in PATHS for m in METHODS]
    cases += [
        Hostile(f"auth {name}", "POST", "/score", good.encode(), headers, keyed=False)
        for name, headers in {
            "none": (),
            "empty": (("X-API-Key", ""),),
            "wrong": (("X-API-Key", "wrong-key-wrong-key-wrong"),),
            "bearer wrong": (("Authorization", "Bearer nope-nope-nope-nope"),),
            "basic": (("Authorization", "Basic dXNlcjpwYXNz"),),
            "huge": (("X-API-Key", "k" * 30_000),),
            "latin-1": (("X-API-Key", "cl\xe9-cl\xe9-cl\xe9-cl\xe9"),),
        }.items()
    ]
    raw_bodies = [
        "", " ", "null", "true", "1", '"x"', "[]", "{}", "[[]]", "[{}]", "[null]", '{"dataframe_records": 1}',
        '{"dataframe_split": []}', '{"dataframe_split": {"columns": "age", "data": []}}', "{", "}", "[1,2",
        "\ufeff" + good, "NaN", "-Infinity", good + good, good + "garbage", "1" + "0" * 400, "9" * 5_000,
        "[" * 5_000 + "]" * 5_000, '{"a":' * 5_000 + "1" + "}" * 5_000, "\x00" * 100,
        '{"dataframe_split": {"columns": [[1]], "data": [[1]]}}',
        '{"dataframe_split": {"columns": [null], "data": []}}',
        json.dumps({"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}}),
        json.dumps([good] * 3),
    ]  # fmt: skip
    cases += [_post(f"body {i}", body.encode()) for i, body in enumerate(raw_bodies)]
    cases += [_post("not utf-8", b"\xff\xfe\xfd"), _post("utf-16 body", good.encode("utf-16"))]
    for field, value in record.items():
        bad_values = NUMERIC_BAD if isinstance(value, int | float) else CATEGORY_BAD + CATEGORY_UNSEEN
        cases += [_post(f"{field}={bad!r}", record | {field: bad}) for bad in bad_values]
        cases.append(_post(f"missing {field}", {k: v for k, v in record.items() if k != field}))
        if isinstance(value, int | float):  # a literal JSON cannot write from Python: 1e400 (infinity)
            cases.append(_post(f"{field}=1e400", good.replace(f'"{field}": ', f'"{field}": 1e400, "x": ').encode()))
    for extra in ({"shoe_size": 44}, {"": 1}, {"age ": 1}, {"__proto__": {}}, {"x" * 1_000: 1}):
        cases.append(_post(f"extra {next(iter(extra))[:20]}", record | extra))
    columns = list(record)
    cases += [
        _post("1001 rows", [record] * 1_001),
        _post("records of lists", [[record]]),
        _post("split short row", {"dataframe_split": {"columns": columns, "data": [[1]]}}),
        _post("split dup", {"dataframe_split": {"columns": ["age", "age"], "data": [[1, 2]]}}),
        _post("form body", b"age=41&city=Austin", (("Content-Type", "application/x-www-form-urlencoded"),)),
        _post("1 MiB + 1", b"[" + b" " * (1 << 20) + b"]"),
    ]
    return cases


def test_hostile_requests_never_get_a_5xx(service, bundle):
    record = bundle[1][0]
    corpus = _corpus(record)
    assert len({(c.method, c.path, c.content, c.headers) for c in corpus}) >= 300
    failures, statuses = [], []
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for case in corpus:
            headers = [(k.encode(), v.encode("latin-1")) for k, v in case.headers]
            headers += [(b"X-API-Key", service.key.encode())] if case.keyed else []
            response = client.request(case.method, case.path, content=case.content, headers=headers)
            statuses.append(response.status_code)
            is_json = response.headers.get("content-type", "").startswith("application/json")
            if case.method == "HEAD" or (case.path == "/metrics" and response.status_code == 200):
                is_json, body = True, {"error": "HEAD has no body; /metrics is Prometheus text"}
            else:
                body = response.json() if is_json else {}
            if response.status_code >= 500 or not is_json or (response.status_code >= 400 and not body.get("error")):
                failures.append((case.name, response.status_code, response.headers.get("content-type"), response.text))
        assert client.post("/score", json=record, headers={"X-API-Key": service.key}).status_code == 200
    assert failures == [], failures
    assert {401, 404, 405, 413, 422} <= set(statuses)  # the corpus reaches each kind of refusal
    unseen = [i for i, c in enumerate(corpus) if any(c.name.endswith(f"={v!r}"[:60]) for v in CATEGORY_UNSEEN[2:])]
    assert unseen and all(statuses[i] == 200 for i in unseen)  # a category never seen in training is scored


def test_a_lone_surrogate_in_a_category_is_a_422_naming_the_field(service, bundle):
    """JSON can spell a string that is not Unicode text ("\\ud800"); the model never sees it, whatever the form."""
    record = bundle[1][0]
    split = {"dataframe_split": {"columns": list(record), "data": [list(record.values()) for _ in "ab"]}}
    split["dataframe_split"]["data"][1][list(record).index("gender")] = "\udc00"
    bodies = {
        "one record": (record | {"city": "\ud800"}, "record: field 'city'"),
        "a list": ([record, record | {"account_type": "Sav\ud83dings"}], "record 1: field 'account_type'"),
        "dataframe_split": (split, "record 1: field 'gender'"),
    }
    with service.client() as client:
        for case, (body, field) in bodies.items():
            content = json.dumps(body).encode()  # ASCII, the surrogate escaped as JSON allows
            assert b"\\ud8" in content or b"\\udc00" in content
            answer = client.post("/score", content=content, headers={"Content-Type": "application/json"})
            assert answer.status_code == 422, (case, answer.text)
            assert field in answer.json()["error"] and "not valid Unicode text" in answer.json()["error"], case
        assert client.post("/score", json=record).status_code == 200  # and the service scores on
