"""A submission's request is checked before anything is built or run."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest

from fin_behavior.records import read_json
from fin_behavior.settings import get_settings
from fin_behavior.submissions import errors
from fin_behavior.submissions.intake import accept, check_requirements, decode_script
from fin_behavior.submissions.record import Submission

SCRIPT = "import mlflow\nprint('hello')\n"


def test_a_good_request_is_stored_queued_with_the_script_as_sent():
    settings = get_settings()
    submission = accept(settings, base64.b64encode(SCRIPT.encode()).decode(), "churn-v2", ["scikit-learn>=1.5"], 30)
    stored = Submission.load(settings.submissions_root, submission.id)
    assert stored.state == "queued" and stored.requirements == ["scikit-learn>=1.5"] and stored.timeout_seconds == 30
    assert (submission.directory(settings.submissions_root) / "train.py").read_text() == SCRIPT  # decoded, verbatim
    assert decode_script(SCRIPT) == SCRIPT  # plain text stays plain text


@pytest.mark.parametrize(
    ("requirement", "reason"),
    [
        ("https://evil.example/pkg.whl", "not a package specifier"),
        ("pkg @ https://evil.example/pkg.whl", "a URL or a path"),
        ("--index-url https://evil.example/simple", "an option"),
        ("-e .", "an option"),
        ("./local_dir", "not a package specifier"),
        ("", "an option or an empty line"),
    ],
)
def test_requirements_are_package_specifiers_and_nothing_else(requirement, reason):
    with pytest.raises(errors.SubmissionError, match=reason) as raised:
        check_requirements(["pandas", requirement])
    assert raised.value.status == 422 and "package specifiers only" in raised.value.help


def test_a_syntax_error_is_named_with_its_line_before_anything_is_built():
    settings = get_settings()
    with pytest.raises(errors.SubmissionError) as raised:
        accept(settings, "import mlflow\n\ndef train(:\n    pass\n", "bad-syntax", [], 30)
    error = raised.value.to_dict()
    assert error["error"] == "Syntax Error" and "line 3" in error["message"] and "def train(:" in error["details"]
    assert not settings.submissions_root.exists() or not any(settings.submissions_root.iterdir())


@pytest.mark.parametrize(
    ("name", "script", "timeout", "message"),
    [
        ("1-starts-with-a-digit", SCRIPT, 30, "is not usable"),
        ("look-alike\n", SCRIPT, 30, "is not usable"),  # not a second name beside "look-alike"
        ("financial-behavior-model", SCRIPT, 30, "the platform's own model"),
        ("Financial_Behavior_Model", SCRIPT, 30, "the platform's own model"),  # a look-alike
        ("ok", "   ", 30, "the script is empty"),
        ("ok", SCRIPT, 0, "is not between 0 and"),
        ("ok", SCRIPT, 10**6, "is not between 0 and"),
    ],
)
def test_other_mistakes_say_what_is_wrong(name, script, timeout, message):
    with pytest.raises(errors.SubmissionError, match=message):
        accept(get_settings(), script, name, [], timeout)


def test_the_script_size_is_limited():
    with pytest.raises(errors.SubmissionError, match="at most 262,144") as raised:
        accept(get_settings(), "x = 1\n" * 50_000, "too-big", [], 30)
    assert raised.value.status == 413


def test_an_unusable_keys_file_is_the_platform_s_fault_said_as_such_and_nothing_is_submitted():
    from fin_behavior.submissions.api import EXAMPLE, SubmissionService

    service = SubmissionService(get_settings())
    team_key = "team-a-s-own-key-0123"
    key = {"X-API-Key": team_key}
    request = {"script_content": EXAMPLE, "model_name": "m"}
    broken = {"script_content": "def f(:\n", "model_name": "m"}  # judged (422) once its key is taken
    operator_edits = [
        f'{{"keys": ["{team_key}", ',  # cut short
        f'{{"keys": ["{team_key}", ""]}}',  # an empty key, which would let a keyless request in
        f'{{"keys": ["{team_key}", "short"]}}',  # a guessable one
    ]

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=service.app)  # the app in process (no lifespan: nothing will run)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            answers = []
            for edit in operator_edits:
                service.keys_file.write_text(edit)
                answers.append(await client.post("/mlops/deploy", json=request, headers=key))
                answers.append(await client.post("/mlops/deploy", json=request))
                answers.append(await client.get("/mlops/submissions/0123456789ab", headers=key))
            service.keys_file.write_text(f'{{"keys": ["{team_key}"]}}')  # mended: taken again, with no restart
            answers.append(await client.post("/mlops/deploy", json=broken, headers=key))
            return answers

    answers = asyncio.run(ask())
    assert [a.status_code for a in answers] == [503] * 9 + [422]
    assert all(a.json()["error"] == "Platform Misconfigured" for a in answers[:9])
    assert str(service.keys_file) in answers[0].json()["message"] and "16+ characters" in answers[0].json()["message"]
    assert not list(get_settings().submissions_root.glob("*/submission.json"))


def test_a_name_belongs_to_the_key_that_made_it_and_its_owner_keeps_replacing_it():
    settings = get_settings()
    accept(settings, SCRIPT, "team-a-model", [], 30, client="a" * 12)
    with pytest.raises(errors.SubmissionError) as raised:
        accept(settings, SCRIPT, "team-a-model", [], 30, client="b" * 12)
    assert raised.value.status == 403 and raised.value.error == "Forbidden"
    assert "belongs to another team" in raised.value.message and "another model name" in raised.value.help
    with pytest.raises(errors.SubmissionError, match="belongs to another team"):
        accept(settings, SCRIPT, "team-a-model", [], 30, client="")  # the command line is no one's master key
    with pytest.raises(errors.SubmissionError, match="it looks like 'team-a-model'"):
        accept(settings, SCRIPT, "Team_A-Model", [], 30, client="b" * 12)  # a look-alike is the same name
    again = accept(settings, SCRIPT, "team-a-model", [], 30, client="a" * 12)
    assert again.name == "team-a-model"
    assert len(list(settings.submissions_root.glob("*/submission.json"))) == 2  # the refused ones left nothing


def test_a_request_body_over_the_limit_is_refused_before_it_is_read():
    from fin_behavior.submissions.api import SubmissionService

    service = SubmissionService(get_settings())
    key = {"X-API-Key": read_json(service.keys_file)["keys"][0]}
    limit = get_settings().submission_max_script_bytes * 2 + 65_536
    sent = []

    async def endless():  # a client that would send 300 MiB: the service must stop asking long before
        for _ in range(300):
            sent.append(1)
            yield b"x" * (1 << 20)

    async def ask() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            huge = key | {"content-length": str(300 << 20)}
            declared = await client.post("/mlops/deploy", content=b"{}", headers=huge)
            streamed = await client.post("/mlops/deploy", content=endless(), headers=key)
            return declared, streamed

    declared, streamed = asyncio.run(ask())
    assert declared.status_code == streamed.status_code == 413
    assert f"over {limit:,} bytes" in streamed.json()["message"]
    assert len(sent) <= limit // (1 << 20) + 2  # read no further than the limit


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_frees_its_place(monkeypatch):
    from fin_behavior.submissions import api

    monkeypatch.setattr(api, "_BODY_SECONDS", 0.5)
    service = api.SubmissionService(get_settings())
    key = {"X-API-Key": read_json(service.keys_file)["keys"][0]}

    async def stalled():  # a client that starts its body and then waits
        yield b'{"model_name": '
        await asyncio.sleep(5)
        yield b'"m"}'

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post("/mlops/deploy", content=stalled(), headers=key)

    answer = asyncio.run(ask())
    assert answer.status_code == 408 and "did not arrive within 0.5 s" in answer.json()["message"]
    assert service.receiving == 0
