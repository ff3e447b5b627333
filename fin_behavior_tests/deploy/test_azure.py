"""The Azure ML target without Azure: the adapter's exact calls against autospec'd `*Operations` (so SDK
signature drift fails here), the shared rollout through an in-memory workspace that can fail at each step, and
the generated score.py served for real by azureml-inference-server-http in the azureml-sklearn-1.5 env."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock, create_autospec

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from fin_behavior.cli import main
from fin_behavior.deploy import azure
from fin_behavior.deploy.local import free_port
from fin_behavior.deploy.rollout import RolloutError, rollout
from fin_behavior.environments import builder
from fin_behavior.environments.spec import get_spec
from fin_behavior.monitoring.window import read_window
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import ENVS, QUICK_GATES, known_answers
from fin_behavior_tests.serving_fixtures import build_bundle, release

CONFIG = azure.AzureConfig("sub", "rg", "ws", "fin-test", "Standard_F4s_v2", 1, 90_000, 4, 1.0, conflict_wait_seconds=0)


def _done(value=None):
    return SimpleNamespace(result=lambda: value)


class FakeWorkspace:
    """An in-memory workspace behind autospec'd operations, with Azure's rules: traffic sums to 0 or 100, a
    deployment with traffic cannot be deleted. `fail` makes one step fail: provisioning, invoke, traffic, or the
    new deployment under a canary share of traffic."""

    def __init__(self, fail: str | None = None, conflicts: int = 0):
        self.fail = fail
        self.conflicts = conflicts  # endpoint updates answered 409 (another operation in progress) before one passes
        self.endpoints: dict[str, SimpleNamespace] = {}
        self.deployments: dict[str, SimpleNamespace] = {}
        self.bundles: dict[str, dict] = {}  # model version -> expected.json of its bundle
        self.traffic_history: list[dict[str, int]] = []
        # imported here, not at collection: 1.4 s of CPU in every test worker otherwise
        from azure.ai.ml.operations import (
            EnvironmentOperations,
            ModelOperations,
            OnlineDeploymentOperations,
            OnlineEndpointOperations,
        )

        self.client = MagicMock()
        self.client.online_endpoints = endpoints = create_autospec(OnlineEndpointOperations, instance=True)
        self.client.online_deployments = deployments = create_autospec(OnlineDeploymentOperations, instance=True)
        self.client.models = create_autospec(ModelOperations, instance=True)
        self.client.environments = create_autospec(EnvironmentOperations, instance=True)
        endpoints.get.side_effect = self._get_endpoint
        endpoints.begin_create_or_update.side_effect = self._put_endpoint
        endpoints.invoke.side_effect = self._invoke
        deployments.begin_create_or_update.side_effect = self._put_deployment
        deployments.get.side_effect = lambda name, endpoint_name, **_: self.deployments[name]
        deployments.begin_delete.side_effect = self._delete
        deployments.get_logs.side_effect = lambda name, endpoint_name, lines, **_: f"{name}: container log tail"
        self.client.models.create_or_update.side_effect = self._put_model
        self.client.environments.create_or_update.side_effect = lambda environment: environment

    def _get_endpoint(self, name, **_):
        if name not in self.endpoints:
            raise ResourceNotFoundError(f"endpoint {name} not found")
        stored = self.endpoints[name]  # a copy, as from the service: changing it changes nothing until it is sent
        copied = {"traffic": dict(stored.traffic), "mirror_traffic": dict(stored.mirror_traffic)}
        return SimpleNamespace(**vars(stored) | copied)

    def _put_endpoint(self, endpoint, **_):
        if self.conflicts:
            self.conflicts -= 1
            busy = HttpResponseError(message="(Conflict) an update of this endpoint is in progress")
            busy.status_code = 409
            raise busy
        traffic = dict(endpoint.traffic or {})
        if sum(traffic.values()) not in (0, 100):
            raise HttpResponseError(message=f"traffic must sum to 0 or 100: {traffic}")
        if self.fail == "traffic" and any(v == 100 and k == "green" for k, v in traffic.items()):
            raise HttpResponseError(message="(Conflict) traffic update refused: another operation is in progress")
        if self.fail == "canary" and 0 < traffic.get("green", 0) < 100:  # it fails once it takes real traffic
            self.deployments["green"].provisioning_state = "Failed"
        mirror = dict(getattr(endpoint, "mirror_traffic", None) or {})
        if any(share > 50 or traffic.get(name, 0) > 0 for name, share in mirror.items()):
            raise HttpResponseError(message=f"mirror at most 50% to a deployment without live traffic: {mirror}")
        self.traffic_history.append(traffic)
        stored = SimpleNamespace(
            name=endpoint.name, traffic=traffic, mirror_traffic=mirror, provisioning_state="Succeeded",
            scoring_uri="https://fin-test/score",
        )  # fmt: skip
        self.endpoints[endpoint.name] = stored
        return _done(stored)

    def _put_model(self, model):
        self.bundles[model.version] = json.loads(Path(model.path, "expected.json").read_text())
        return model

    def _put_deployment(self, deployment, **_):
        state = "Failed" if self.fail == "provisioning" else "Succeeded"
        self.deployments[deployment.name] = SimpleNamespace(
            entity=deployment, tags=deployment.tags, provisioning_state=state
        )
        return _done(self.deployments[deployment.name])

    def _delete(self, name, endpoint_name, **_):
        stored = self.endpoints[endpoint_name]
        if stored.traffic.get(name, 0) > 0 or stored.mirror_traffic.get(name, 0) > 0:
            raise HttpResponseError(message=f"deployment {name} has traffic and cannot be deleted")
        self.deployments.pop(name, None)
        return _done()

    def _invoke(self, endpoint_name, *, request_file=None, deployment_name=None, **_):
        if deployment_name is None:
            deployment_name = next(k for k, v in self.endpoints[endpoint_name].traffic.items() if v == 100)
        if self.fail == "invoke" and deployment_name == "green":
            raise HttpResponseError(message="(502) upstream request failed: model crashed")
        version = self.deployments[deployment_name].tags["model_version"]
        expected = self.bundles[version]
        by_record = known_answers(expected)
        records = json.loads(Path(request_file).read_text())
        return json.dumps({"probabilities": [by_record[json.dumps(r, sort_keys=True)] for r in records],
                           "model_version": version})  # fmt: skip


@pytest.fixture
def workspace():
    return FakeWorkspace()


def _target(workspace: FakeWorkspace, tmp_path: Path) -> azure.AzureMLTarget:
    return azure.AzureMLTarget(workspace.client, CONFIG, ENVS, tmp_path / "azureml")


def test_first_deployment_sends_exactly_the_entities_the_seeds_needed(workspace, bundle, tmp_path, serving_env):
    target = _target(workspace, tmp_path)
    result = rollout(target, release(bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    assert result.new.color == "blue" and workspace.endpoints["fin-test"].traffic == {"blue": 100}

    endpoint = workspace.client.online_endpoints.begin_create_or_update.call_args_list[0].args[0]
    assert endpoint.name == "fin-test" and endpoint.auth_mode == "key"
    model = workspace.client.models.create_or_update.call_args.args[0]
    assert (model.name, model.version, model.type, model.path) == ("m", "1", "custom_model", str(bundle[0]))
    assert model.tags["environment_fingerprint"] == serving_env.fingerprint
    environment = workspace.client.environments.create_or_update.call_args.args[0]
    assert environment.version == serving_env.fingerprint
    assert environment.conda_file["dependencies"][2]["pip"] == list(serving_env.resolution.pins)

    deployment = workspace.deployments["blue"].entity
    assert (deployment.name, deployment.endpoint_name, deployment.instance_type) == (
        "blue",
        "fin-test",
        "Standard_F4s_v2",
    )
    assert deployment.request_settings.request_timeout_ms == 90_000
    assert deployment.request_settings.max_concurrent_requests_per_instance == 4
    assert deployment.environment_variables["WORKER_COUNT"] == "4"
    assert deployment.environment_variables["FIN_BEHAVIOR_BUNDLE_DIGEST"] == release(bundle[0], "1").info.digest
    collections = deployment.data_collector.collections
    assert collections["model_inputs"].enabled == collections["model_outputs"].enabled == "true"
    assert deployment.data_collector.sampling_rate == 1.0
    assert deployment.liveness_probe.initial_delay == 30 and deployment.readiness_probe.failure_threshold == 30
    code = Path(deployment.code_configuration.code)
    assert deployment.code_configuration.scoring_script == "score.py" and (code / "score.py").is_file()
    assert (code / "fin_behavior" / "serving" / "bundle.py").is_file() and not (code / "fin_behavior" / "defs").exists()
    invoked = workspace.client.online_endpoints.invoke.call_args_list[0]
    assert invoked.kwargs["deployment_name"] == "blue"  # gated by name before it had any traffic


def test_blue_green_moves_traffic_then_deletes_the_old_color(workspace, bundle, tmp_path):
    target = _target(workspace, tmp_path)
    rollout(target, release(bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    result = rollout(target, release(bundle[0], "2"), QUICK_GATES, log=lambda _: None)
    assert result.new.color == "green" and result.replaced.version == "1"
    assert workspace.endpoints["fin-test"].traffic == {"green": 100, "blue": 0}
    assert set(workspace.deployments) == {"green"}
    workspace.client.online_deployments.begin_delete.assert_called_with("blue", "fin-test")
    assert target.score(None, bundle_records(workspace))[1] == "2"


CANARY = dataclasses.replace(QUICK_GATES, traffic_steps=(10, 50))


def test_canary_steps_move_traffic_in_shares_before_all_of_it(workspace, bundle, tmp_path):
    target = _target(workspace, tmp_path)
    rollout(target, release(bundle[0], "1"), CANARY, log=lambda _: None)  # first: nothing to share
    messages = []
    rollout(target, release(bundle[0], "2"), CANARY, log=messages.append)
    assert workspace.traffic_history[1:] == [  # [0]: the endpoint created with no traffic
        {"blue": 100},
        {"green": 10, "blue": 90},
        {"green": 50, "blue": 50},
        {"green": 100, "blue": 0},
    ]
    assert "10% of traffic on green; watching it for 0 s" in messages
    assert set(workspace.deployments) == {"green"}


def test_a_shadow_is_azures_mirror_traffic_and_a_split_its_traffic_map(workspace, bundle, tmp_path):
    target = _target(workspace, tmp_path)
    rollout(target, release(bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    green = target.start(release(bundle[0], "2"), "green")
    target.challenge(green, "shadow", 0.2, 1.0)
    endpoint = workspace.endpoints["fin-test"]
    assert endpoint.mirror_traffic == {"green": 20} and endpoint.traffic == {"blue": 100}
    assert (target.live().version, target.challenger().version) == ("1", "2")
    target.end_challenge(green)
    assert workspace.endpoints["fin-test"].mirror_traffic == {} and set(workspace.deployments) == {"blue"}

    green = target.start(release(bundle[0], "2"), "green")
    target.challenge(green, "split", 0.1, 1.0)
    assert workspace.endpoints["fin-test"].traffic == {"blue": 90, "green": 10}
    assert (target.live().color, target.challenger().color) == ("blue", "green")  # the majority stays live
    target.end_challenge(green)
    assert workspace.endpoints["fin-test"].traffic == {"blue": 100, "green": 0}
    assert set(workspace.deployments) == {"blue"}


@pytest.mark.parametrize(
    "mode, share, said",
    [
        ("shadow", 0.6, "mirrors at most 50%"),
        ("split", 0.5, "less than half"),  # the majority is what Azure's live() reads
        ("split", 0.125, "whole percents"),
        ("shadow", 0.001, "whole percents"),
    ],
)
def test_a_share_azure_cannot_take_is_refused_saying_why(workspace, bundle, tmp_path, mode, share, said):
    target = _target(workspace, tmp_path)
    rollout(target, release(bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    green = target.start(release(bundle[0], "2"), "green")
    with pytest.raises(RolloutError, match=said):
        target.challenge(green, mode, share, 1.0)
    endpoint = workspace.endpoints["fin-test"]
    assert endpoint.traffic == {"blue": 100} and not endpoint.mirror_traffic


def test_a_canary_that_fails_under_traffic_gives_it_all_back(bundle, tmp_path):
    workspace = FakeWorkspace()
    target = _target(workspace, tmp_path)
    rollout(target, release(bundle[0], "1"), CANARY, log=lambda _: None)
    workspace.fail = "canary"
    with pytest.raises(RolloutError) as raised:
        rollout(target, release(bundle[0], "2"), CANARY, log=lambda _: None)
    assert "v2 on green stopped being ready with 10% of traffic" in raised.value.reason
    assert "green: container log tail" in raised.value.log_tail
    assert workspace.traffic_history[-1] == {"green": 0, "blue": 100}
    assert set(workspace.deployments) == {"blue"} and target.live().version == "1"


def test_a_run_cut_off_mid_canary_leaves_the_majority_color_live(workspace, bundle, tmp_path):
    target = _target(workspace, tmp_path)
    rollout(target, release(bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    rollout(target, release(bundle[0], "2"), QUICK_GATES, keep_old=True, log=lambda _: None)
    workspace.endpoints["fin-test"].traffic = {"green": 10, "blue": 90}  # as a killed canary run leaves it
    assert target.live().color == "blue"  # v1 holds the majority: the next rollout replaces green, not blue
    rollout(target, release(bundle[0], "3"), QUICK_GATES, log=lambda _: None)
    assert workspace.endpoints["fin-test"].traffic == {"green": 100, "blue": 0} and target.live().version == "3"


def bundle_records(workspace: FakeWorkspace) -> list[dict]:
    return next(iter(workspace.bundles.values()))["records"][:2]


@pytest.mark.parametrize(
    ("fail", "reason"),
    [("provisioning", "ended Failed"), ("invoke", "model crashed"), ("traffic", "traffic update refused")],
)
def test_each_failing_step_puts_traffic_back_on_the_old_color(fail, reason, bundle, tmp_path):
    workspace = FakeWorkspace()
    target = _target(workspace, tmp_path)
    rollout(target, release(bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    workspace.fail = fail
    with pytest.raises(RolloutError) as raised:
        rollout(target, release(bundle[0], "2"), QUICK_GATES, log=lambda _: None)
    assert reason in str(raised.value)
    assert "green: container log tail" in raised.value.log_tail  # get_logs of the new deployment
    assert workspace.endpoints["fin-test"].traffic.get("blue") == 100
    assert not workspace.endpoints["fin-test"].traffic.get("green")
    assert "green" not in workspace.deployments and target.live().version == "1"


def test_a_busy_endpoint_is_waited_for_and_a_locked_one_refused_cleanly(bundle, tmp_path):
    """Azure refuses a second operation on an endpoint while one runs (409): wait and try again, then give up
    with a clear reason and the traffic where it was."""
    workspace = FakeWorkspace()
    target = _target(workspace, tmp_path)
    rollout(target, release(bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    workspace.conflicts = 2  # someone else's update is still running for two attempts
    rollout(target, release(bundle[0], "2"), QUICK_GATES, log=lambda _: None)
    assert workspace.endpoints["fin-test"].traffic == {"green": 100, "blue": 0} and target.live().version == "2"

    workspace.conflicts = CONFIG.conflict_attempts  # and now for longer than we wait
    with pytest.raises(RolloutError) as raised:
        rollout(target, release(bundle[0], "3"), QUICK_GATES, log=lambda _: None)
    message = str(raised.value)
    assert "another operation is in progress on endpoint fin-test (409 Conflict, 6 attempts)" in message
    assert workspace.endpoints["fin-test"].traffic == {"green": 100, "blue": 0} and target.live().version == "2"
    assert "blue" not in workspace.deployments  # the new color that never got traffic was removed


def test_non_local_target_moves_no_traffic_without_approval(workspace, bundle, tmp_path):
    target = _target(workspace, tmp_path)
    rollout(target, release(bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    with pytest.raises(RolloutError, match="auto_approve"):
        rollout(target, release(bundle[0], "2"), QUICK_GATES, approved=False, log=lambda _: None)
    assert workspace.endpoints["fin-test"].traffic == {"blue": 100}


def test_missing_configuration_is_named(tmp_path, monkeypatch):
    for name in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_WORKSPACE_NAME"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(azure.AzureConfigError) as raised:
        azure.workspace_from({}, tmp_path / "config.json")
    message = str(raised.value)
    assert all(v in message for v in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_WORKSPACE_NAME"))

    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "from-env")
    (tmp_path / "config.json").write_text(json.dumps({"resource_group": "rg", "workspace_name": "ws"}))
    assert azure.workspace_from({}, tmp_path / "config.json") == ("from-env", "rg", "ws")
    assert azure.workspace_from({"workspace_name": "set"}, tmp_path / "config.json")[2] == "set"


def test_failed_authentication_is_a_clear_error(monkeypatch):
    class NoCredential:
        def __init__(self, *args, **kwargs): ...

        def get_token(self, *args, **kwargs):
            raise ClientAuthenticationError(message="DefaultAzureCredential failed to retrieve a token")

        get_token_info = get_token

    monkeypatch.setattr("azure.identity.DefaultAzureCredential", NoCredential)
    with pytest.raises(azure.AzureConfigError, match="az login"):
        azure.ml_client("00000000-0000-0000-0000-000000000000", "rg", "ws")


# The generated score.py, served for real by Azure's own inference server ---------------------------------


@pytest.fixture(scope="module")
def azure_scoring_server(trained, processed, tmp_path_factory):
    try:
        env = builder.build(get_spec("azureml-sklearn-1.5"), ENVS)
    except builder.EnvironmentBuildError as exc:
        pytest.skip(f"azureml-sklearn-1.5 cannot be built here: {exc}")
    work = tmp_path_factory.mktemp("azure")
    model_dir = work / "model"
    build_bundle(env, trained, model_dir, processed.raw_inputs)  # AZUREML_MODEL_DIR/bundle, as Azure mounts one
    code = azure.write_scoring_code(work / "code")
    port = free_port()
    log = work / "server.log"
    process = subprocess.Popen(
        [str(env.path / "bin" / "azmlinfsrv"), "--entry_script", str(code / "score.py"), "--port", str(port)],
        cwd=code,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=os.environ | {"AZUREML_MODEL_DIR": str(model_dir), "FIN_BEHAVIOR_MODEL_VERSION": "7", "WORKER_COUNT": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    else:
        raise RuntimeError(f"azmlinfsrv did not start: {log.read_text()[-3000:]}")
    yield url, json.loads((model_dir / "bundle" / "expected.json").read_text()), log
    process.terminate()
    process.wait(30)


def test_score_py_under_the_azure_inference_server_scores_like_the_local_service(azure_scoring_server, service):
    url, expected, _ = azure_scoring_server
    records = expected["records"][:50]
    answer = httpx.post(f"{url}/score", json=records, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "7"
    assert body["probabilities"] == pytest.approx(expected["probabilities"][:50], abs=1e-6)

    local = httpx.post(f"{service.url}/score", json=records, headers={"X-API-Key": service.key}).json()
    assert body["predictions"] == local["predictions"]
    assert body["probabilities"] == pytest.approx(local["probabilities"], abs=1e-4)

    raw = httpx.post(f"{url}/score", json=expected["raw_records"][:50], timeout=30)  # the bank's own record
    assert raw.status_code == 200, raw.text
    assert raw.json()["probabilities"] == body["probabilities"]
    assert raw.json()["ignored_columns"] == ["TransactionID"]


@pytest.mark.parametrize(
    ("payload", "status", "names"),
    [
        (b'{"age": 4', 400, "not valid JSON"),
        ([{"age": "x"}], 422, "'age' must be a number"),
        ([], 422, "no records"),
        (b'[{"age": 1' + b"0" * 400 + b"}]", 422, "'age' must be a finite number"),
        (b'[{"age": ' + b"9" * 5_000 + b"}]", 422, "'age' must be a finite number"),
        (b"[" * 10_000 + b"]" * 10_000, 400, "nested too deeply"),
        ({"dataframe_split": {"columns": [[1]], "data": [[1]]}}, 422, "must be field names"),
    ],
    ids=["malformed", "wrong-type", "empty", "10**400", "5000-digits", "deep", "odd-columns"],
)
def test_score_py_answers_bad_input_with_the_local_services_messages(azure_scoring_server, payload, status, names):
    url, _, _ = azure_scoring_server
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answer = httpx.post(f"{url}/score", content=content, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == status and names in answer.json()["error"], answer.text


def test_score_py_scores_an_unknown_category_and_names_it(azure_scoring_server):
    url, expected, _ = azure_scoring_server
    answer = httpx.post(f"{url}/score", json=[expected["records"][0] | {"city": "Omaha"}], timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["unknown_categories"] == [{"record": 0, "field": "city", "value": "Omaha"}]


def test_score_py_answers_a_lone_surrogate_with_a_422_naming_the_field(azure_scoring_server):
    url, expected, _ = azure_scoring_server
    content = json.dumps([expected["records"][0] | {"city": "\ud800"}]).encode()  # JSON's escape: "\\ud800"
    answer = httpx.post(f"{url}/score", content=content, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 422 and "field 'city' is not valid Unicode text" in answer.json()["error"], answer.text


def test_score_py_logs_what_the_monitor_reads(azure_scoring_server, tmp_path, monkeypatch, capsys):
    """score.py's stdout lines, exported and split as the README says, give the monitor the same figures as
    the local service's log: the mapping, offline, with Azure's own inference server."""
    url, expected, log = azure_scoring_server
    started, earlier = time.time(), log.stat().st_size  # the server (one per module) logged other tests' requests
    records = expected["records"][:30]
    with httpx.Client(base_url=url, timeout=30) as client:
        for record in records:
            assert client.post("/score", json=record).status_code == 200
        assert client.post("/score", json={"age": "x"}).status_code == 422
    time.sleep(0.5)
    exported = tmp_path / "azure.log"  # what `get-logs` would give for this window
    exported.write_bytes(log.read_bytes()[earlier:])
    monkeypatch.setenv("FIN_BEHAVIOR_MONITOR_LOG_DIR", str(tmp_path / "azure-log"))
    get_settings.cache_clear()
    assert main(["endpoint", "import-log", str(exported), "--name", "green"]) == 0
    assert "31 request lines, 30 input lines and 0 label lines" in capsys.readouterr().out
    assert main(["endpoint", "stats"]) == 0
    assert "31 requests in 1 log file(s)" in capsys.readouterr().out
    window = read_window(tmp_path / "azure-log", started, time.time() + 1, max_sampled=100)
    traffic = window.versions["7"]
    assert traffic.requests == 31 and traffic.outcomes == {200: 30, 422: 1} and traffic.rows == 30
    columns, probabilities = traffic.sample(list(records[0]))
    assert len(probabilities) == 30 and sorted(columns["age"]) == sorted(r["age"] for r in records)


def test_score_py_answers_with_the_request_id_in_body_and_header(azure_scoring_server):
    url, expected, _ = azure_scoring_server
    with httpx.Client(base_url=url, timeout=30) as client:
        own = client.post("/score", json=expected["records"][0], headers={"X-Request-ID": "azure-case_1.2"})
        made = client.post("/score", json=expected["records"][0])
        refused = client.post("/score", json=expected["records"][0], headers={"X-Request-ID": "no spaces"})
    assert own.status_code == 200 and own.json()["request_id"] == own.headers["x-request-id"] == "azure-case_1.2"
    assert made.status_code == 200 and made.json()["request_id"] == made.headers["x-request-id"]
    assert refused.status_code == 400 and "1 to 64 characters" in refused.json()["error"], refused.text
    assert refused.json()["request_id"] == refused.headers["x-request-id"] != "no spaces"
