"""The Kubernetes target without a cluster: the adapter's calls against autospec'd AppsV1Api, CoreV1Api and
ApiClient (so a changed client signature fails here), behind an in-memory cluster that follows the API's rules
(server-side apply creates or updates, a missing object is a 404) and validates every manifest it is sent against
the Kubernetes OpenAPI schema (kubernetes-validate); the shared rollout, its gates and automatic rollback, and the
rollback job's path (the deployer with a real MLflow registry) on it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import create_autospec

import kubernetes_validate
import mlflow
import pytest

from fin_behavior.cli import main
from fin_behavior.deploy import deployer
from fin_behavior.deploy import kubernetes as k8s
from fin_behavior.deploy.deployer import DeployError, deploy, make_target, prediction_log_dir
from fin_behavior.deploy.rollout import RolloutError, rollout
from fin_behavior.ml import registry
from fin_behavior.monitoring.window import read_window
from fin_behavior.records import BundleFiles, ModelInfo, read_json, sha256_file, write_json
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import QUICK_GATES, evidence, known_answers, local_registry
from fin_behavior_tests.serving_fixtures import release, start_service

KUBERNETES_VERSION = "1.33"
CONFIG = k8s.KubernetesConfig("serving", "fin", 2, "LoadBalancer", "250m", "1", "512Mi", "1Gi", 5, poll_seconds=0)
KEYS = json.dumps({"keys": ["k" * 32], "probe_keys": ["p" * 32]})  # as deployer.make_target writes them


def _api_error(status: int, reason: str) -> Exception:
    """The client's own ApiException (kubernetes.client imported here, not at collection: 0.5 s in every worker)."""
    from kubernetes.client.exceptions import ApiException

    return ApiException(status=status, reason=reason)


def _not_found(what: str) -> Exception:
    return _api_error(404, f"{what} not found")


class FakeCluster:
    """One namespace in memory behind autospec'd clients. `fail`: "pull" (the image cannot be pulled), "parity"
    (the new version answers other numbers), "switch" (the endpoint Service refuses its first selector change)."""

    def __init__(self, fail: str | None = None):
        self.fail = fail
        self.objects: dict[tuple[str, str], dict] = {}  # (kind, name) -> the manifest as last applied
        self.expected: dict[str, dict] = {}  # model version -> expected.json of its bundle
        self.applied: list[tuple[str, str]] = []
        self.scored: list[tuple[str, bool]] = []  # (service, did the endpoint Service exist then)
        self.offered: set[str] = set()  # the API keys the platform's requests carried
        from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api

        self.apps = create_autospec(AppsV1Api, instance=True)
        self.core = create_autospec(CoreV1Api, instance=True)
        self.core.api_client = create_autospec(ApiClient, instance=True)
        for kind in ("deployment", "service", "secret"):
            api = self.apps if kind == "deployment" else self.core
            getattr(api, f"patch_namespaced_{kind}").side_effect = self._apply(kind)
            getattr(api, f"delete_namespaced_{kind}").side_effect = self._delete(kind)
        self.core.read_namespaced_service.side_effect = self._read_service
        self.apps.read_namespaced_deployment.side_effect = self._read_deployment
        self.apps.read_namespaced_deployment_status.side_effect = self._read_deployment
        self.core.list_namespaced_pod.side_effect = self._pods
        self.core.read_namespaced_pod_log.side_effect = lambda name, namespace, **_: f"{name}: serving log tail"
        self.core.api_client.call_api.side_effect = self._proxy

    def _apply(self, kind: str):
        def apply(name, namespace, body, *, field_manager, force, _content_type):
            assert namespace == CONFIG.namespace and field_manager == k8s.FIELD_MANAGER and force
            assert _content_type == "application/apply-patch+yaml"  # server-side apply: create or update
            kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)  # raises on any schema error
            assert body["metadata"]["name"] == name and body["kind"].lower() == kind
            if kind == "service" and name == CONFIG.app and self.fail == "switch" and (kind, name) in self.objects:
                self.fail = None
                raise _api_error(500, "etcdserver: request timed out")
            self.objects[(kind, name)] = body
            self.applied.append((kind, name))
            return SimpleNamespace(metadata=SimpleNamespace(name=name))

        return apply

    def _delete(self, kind: str):
        def delete(name, namespace, **_):
            if self.objects.pop((kind, name), None) is None:
                raise _not_found(f"{kind} {name}")

        return delete

    def _read_service(self, name, namespace, **_):
        service = self.objects.get(("service", name))
        if service is None:
            raise _not_found(f"service {name}")
        ingress = [SimpleNamespace(ip="203.0.113.7", hostname=None)]
        return SimpleNamespace(
            spec=SimpleNamespace(selector=service["spec"]["selector"]),
            status=SimpleNamespace(load_balancer=SimpleNamespace(ingress=ingress)),
        )

    def _read_deployment(self, name, namespace, **_):
        deployment = self.objects.get(("deployment", name))
        if deployment is None:
            raise _not_found(f"deployment {name}")
        replicas = deployment["spec"]["replicas"]
        ready = 0 if self.fail == "pull" else replicas
        return SimpleNamespace(
            metadata=SimpleNamespace(name=name, labels=deployment["metadata"]["labels"]),
            status=SimpleNamespace(ready_replicas=ready, updated_replicas=replicas),
        )

    def _pods(self, namespace, label_selector):
        wanted = dict(pair.split("=") for pair in label_selector.split(","))
        pods = []
        for (kind, name), manifest in self.objects.items():
            labels = manifest["spec"]["template"]["metadata"]["labels"] if kind == "deployment" else {}
            if wanted.items() <= labels.items():
                waiting = SimpleNamespace(reason="ImagePullBackOff", message="back-off pulling image")
                state = SimpleNamespace(waiting=waiting if self.fail == "pull" else None)
                status = SimpleNamespace(container_statuses=[SimpleNamespace(state=state)])
                pods.append(SimpleNamespace(metadata=SimpleNamespace(name=f"{name}-7d9f-x2x"), status=status))
        return SimpleNamespace(items=pods)

    def _proxy(self, path, method, *, header_params, body, response_types_map, auth_settings, **_):
        service_name = path.split("/services/")[1].split(":")[0]
        assert method == "POST" and path.endswith(":http/proxy/score") and auth_settings == ["BearerToken"]
        self.scored.append((service_name, ("service", CONFIG.app) in self.objects))
        secret = json.loads(self.objects[("secret", f"{CONFIG.app}-keys")]["stringData"]["keys.json"])
        self.offered.add(header_params["X-API-Key"])
        if header_params["X-API-Key"] not in secret["keys"] + secret["probe_keys"]:
            raise _api_error(401, "missing or invalid API key")
        service = self.objects.get(("service", service_name))
        if service is None:
            raise _not_found(f"service {service_name}")
        deployment = self.objects[("deployment", f"{CONFIG.app}-{service['spec']['selector'][k8s.COLOR_LABEL]}")]
        version = deployment["metadata"]["labels"][k8s.VERSION_LABEL]
        expected = self.expected[version]
        by_record = known_answers(expected)
        answers = [by_record[json.dumps(r, sort_keys=True)] for r in body]
        if self.fail == "parity" and version != "1":
            answers = [1 - p for p in answers]
        return {"probabilities": answers, "model_version": version}


def _release(cluster: FakeCluster, bundle_dir: Path, version: str):
    made = release(bundle_dir, version)
    cluster.expected[version] = made.expected
    return made


def _target(cluster: FakeCluster) -> k8s.KubernetesTarget:
    def image_for(made) -> str:
        return f"registry.example/fin-behavior-{made.model_name}@sha256:{made.version * 64}"

    return k8s.KubernetesTarget(cluster.apps, cluster.core, CONFIG, image_for, KEYS)


def test_a_first_rollout_applies_valid_manifests_and_gates_the_color_before_the_service_exists(bundle):
    cluster = FakeCluster()
    target = _target(cluster)
    result = rollout(target, _release(cluster, bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    assert result.new.color == "blue" and target.live().version == "1"
    assert set(cluster.objects) == {
        ("secret", "fin-keys"),
        ("deployment", "fin-blue"),
        ("service", "fin-blue"),
        ("service", "fin"),
    }
    assert cluster.scored[0] == ("fin-blue", False)  # the gates reached the new color before any traffic could
    assert cluster.offered == {"p" * 32}  # every gate request was the platform's probe (its key, in the Secret)
    deployment = cluster.objects[("deployment", "fin-blue")]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/fin-behavior-m@sha256:" + "1" * 64  # by digest
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    assert {"name": "keys", "mountPath": k8s.KEYS_DIR, "readOnly": True} in container["volumeMounts"]
    keys = next(v["secret"] for v in pod["volumes"] if v["name"] == "keys")  # readable by the group only
    assert keys["defaultMode"] == 0o440 and pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    assert deployment["spec"]["replicas"] == 2 and deployment["metadata"]["labels"][k8s.VERSION_LABEL] == "1"
    endpoint = cluster.objects[("service", "fin")]["spec"]
    assert endpoint["type"] == "LoadBalancer" and endpoint["selector"][k8s.COLOR_LABEL] == "blue"
    assert target.url == "http://203.0.113.7" and target.score(None, bundle[1][:3])[1] == "1"


def test_blue_green_flips_the_service_selector_then_removes_the_old_color(bundle):
    cluster = FakeCluster()
    target = _target(cluster)
    rollout(target, _release(cluster, bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    result = rollout(target, _release(cluster, bundle[0], "2"), QUICK_GATES, log=lambda _: None)
    assert result.new.color == "green" and result.replaced.version == "1"
    assert cluster.objects[("service", "fin")]["spec"]["selector"][k8s.COLOR_LABEL] == "green"
    assert ("deployment", "fin-blue") not in cluster.objects and ("service", "fin-blue") not in cluster.objects
    assert target.score(None, bundle[1][:3])[1] == "2"


@pytest.mark.parametrize(
    ("fail", "reason"),
    [
        ("parity", "v2 failed its gates on green: parity"),
        ("pull", "v2 did not become ready on green: pod fin-green-7d9f-x2x: ImagePullBackOff"),
        ("switch", "etcdserver: request timed out"),
    ],
)
def test_each_failure_leaves_the_old_color_serving_and_nothing_behind(fail, reason, bundle):
    cluster = FakeCluster()
    target = _target(cluster)
    rollout(target, _release(cluster, bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    cluster.fail = fail
    with pytest.raises(RolloutError) as raised:
        rollout(target, _release(cluster, bundle[0], "2"), QUICK_GATES, log=lambda _: None)
    assert reason in str(raised.value)
    if fail == "pull":
        assert "fin-green-7d9f-x2x: serving log tail" in raised.value.log_tail
    assert cluster.objects[("service", "fin")]["spec"]["selector"][k8s.COLOR_LABEL] == "blue"
    assert ("deployment", "fin-green") not in cluster.objects and target.live().version == "1"


@pytest.fixture
def registered_twice(bundle, tmp_path):
    """Versions 1 and 2 of "m" in a real MLflow registry, with their evidence."""
    client = local_registry(tmp_path, "k8s-test")
    second = tmp_path / "bundle-2"  # other bytes (the registry keeps one version per content), the same answers
    shutil.copytree(bundle[0], second)
    expected = second / BundleFiles.EXPECTED
    write_json(expected, read_json(expected) | {"note": "the second version"})
    info = ModelInfo.read(second)
    ModelInfo(**{**info.__dict__, "sha256": info.sha256 | {BundleFiles.EXPECTED: sha256_file(expected)}}).write(second)
    for version, bundle_dir in (("1", bundle[0]), ("2", second)):
        tags = registry.evidence_tags([evidence(stage, version) for stage in registry.EVIDENCE_STAGES])
        with mlflow.start_run():
            assert registry.register_bundle(client, "m", bundle_dir, tags).version == version
    return client


def test_the_rollback_job_puts_the_previous_version_back_by_the_selector(registered_twice, bundle, tmp_path):
    cluster = FakeCluster()
    target = _target(cluster)
    for version in ("1", "2"):
        cluster.expected[version] = release(bundle[0], version).expected
    settings = get_settings().with_overrides(gate_latency_requests=3, max_latency_ms=1_000.0)
    endpoint = tmp_path / "endpoint"

    def deployed(ref: str):
        return deploy(registered_twice, settings, "m", ref, target, endpoint, who="test", log=lambda _: None)

    deployed("1")
    deployed("2")
    back = deployed("previous")  # what the rollback job and `fin-behavior endpoint rollback` run
    assert back.release.version == "1" and back.replaced_production == "2"
    assert cluster.objects[("service", "fin")]["spec"]["selector"][k8s.COLOR_LABEL] == "blue"
    assert registry.alias_version(registered_twice, "m", registry.PRODUCTION) == "1"


def test_each_deploy_decision_is_in_the_history_an_automatic_rollback_included(registered_twice, bundle, tmp_path):
    from fin_behavior.governance import audit

    cluster = FakeCluster()
    target = _target(cluster)
    for version in ("1", "2"):
        cluster.expected[version] = release(bundle[0], version).expected
    settings = get_settings().with_overrides(gate_latency_requests=3, max_latency_ms=1_000.0, actor="dana")
    deploy(registered_twice, settings, "m", "1", target, tmp_path / "endpoint", who="test", log=lambda _: None)
    cluster.fail = "switch"  # v2 passes its gates, takes the traffic, and the Service's switch fails: put back
    with pytest.raises(RolloutError, match="etcdserver"):
        deploy(registered_twice, settings, "m", "2", target, tmp_path / "endpoint", who="test", log=lambda _: None)
    records = audit.History.of(settings).records()
    assert [(r["event"], r["version"], r["actor"]) for r in records] == [
        (audit.DEPLOY_STARTED, "1", "dana"),
        (audit.DEPLOY_SUCCEEDED, "1", "dana"),
        (audit.ALIAS_MOVED, "1", "dana"),
        (audit.DEPLOY_STARTED, "2", "dana"),
        (audit.AUTOMATIC_ROLLBACK, "2", "dana"),
        (audit.DEPLOY_FAILED, "2", "dana"),
    ]
    assert records[3]["details"]["replacing"] == "1" and records[4]["details"]["serving"] == "1"
    assert "etcdserver: request timed out" in records[5]["details"]["reason"]
    assert all(r["details"]["target"] == "kubernetes" for r in records)
    head = registered_twice.get_model_version("m", "1").tags[audit.HEAD_TAG]
    assert head == f"3:{records[2]['hash']}"  # the last alias move's head, on the version it moved to
    assert registry.alias_version(registered_twice, "m", registry.PRODUCTION) == "1"


def test_a_challenger_is_refused_saying_what_kubernetes_lacks_and_leaves_nothing_behind(
    registered_twice, bundle, tmp_path
):
    from fin_behavior.deploy import challengers
    from fin_behavior.governance import audit

    cluster = FakeCluster()
    target = _target(cluster)
    for version in ("1", "2"):
        cluster.expected[version] = release(bundle[0], version).expected
    settings = get_settings().with_overrides(gate_latency_requests=3, max_latency_ms=1_000.0)
    deploy(registered_twice, settings, "m", "1", target, tmp_path / "endpoint", who="test", log=lambda _: None)
    before = dict(cluster.objects)
    for mode in challengers.MODES:
        with pytest.raises(RolloutError, match="needs a service mesh"):
            challengers.start(registered_twice, settings, "m", "2", target, tmp_path / "endpoint", mode=mode,
                              share=0.1, who="test", log=lambda _: None)  # fmt: skip
        assert cluster.objects == before  # the challenger's color, started and gated, is gone again
    failed = [r for r in audit.History.of(settings).records() if r["event"] == audit.CHALLENGER_FAILED]
    assert len(failed) == 2 and "service mesh" in failed[0]["details"]["reason"]


def test_a_missing_kube_config_is_named_before_anything_is_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("FIN_BEHAVIOR_DEPLOYMENT_TARGET", "kubernetes")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    get_settings.cache_clear()
    with pytest.raises(DeployError, match=r"the Kubernetes target has no cluster to talk to .*KUBECONFIG"):
        make_target(get_settings())


def test_a_manifest_with_a_mistake_is_refused_by_the_schema(bundle):
    image = "registry.example/x@sha256:" + "0" * 64
    manifest = k8s.deployment_manifest(CONFIG, release(bundle[0], "1"), "blue", image)
    manifest["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"not": "a port"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    manifest = k8s.deployment_manifest(CONFIG, release(bundle[0], "1"), "blue", image)
    manifest["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: an unknown field is an error, not ignored
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_pods_prediction_lines_reach_the_monitor_through_the_api_server(
    bundle, serving_env, tmp_path, monkeypatch, capsys
):
    # The real service, writing its prediction log to standard output as it does in the pods; its stdout and
    # stderr in one stream, as a pod's log is.
    service = start_service(serving_env, bundle[0], tmp_path, "--prediction-log", "-")
    try:
        with service.client() as client:
            statuses = [client.post("/score", json=bundle[1][i]).status_code for i in range(20)]
            statuses.append(client.post("/score", json={"age": "old"}).status_code)
    finally:
        service.process.terminate()
        service.process.wait(30)
    assert statuses == [200] * 20 + [422]
    pod_log = service.log.read_text()
    assert "serving model version 7" in pod_log and not service.predictions.exists()

    cluster = FakeCluster()
    target = _target(cluster)
    rollout(target, _release(cluster, bundle[0], "1"), QUICK_GATES, log=lambda _: None)
    pod = cluster.objects[("deployment", "fin-blue")]["spec"]["template"]["spec"]
    assert "args" not in pod["containers"][0]  # the image's own: `--prediction-log -` (test_image.py runs it)
    assert {v["name"] for v in pod["volumes"]} == {"keys", "tmp"}  # no log file in the pod to collect
    asked = []

    def pod_log_of(name, namespace, *, container, since_seconds, **_):
        asked.append((name, container, since_seconds))
        return pod_log

    cluster.core.read_namespaced_pod_log.side_effect = pod_log_of
    directory = tmp_path / "collected"
    monkeypatch.setenv("FIN_BEHAVIOR_DEPLOYMENT_TARGET", "kubernetes")
    monkeypatch.setenv("FIN_BEHAVIOR_MONITOR_LOG_DIR", str(directory))
    get_settings.cache_clear()
    monkeypatch.setattr(deployer, "make_target", lambda settings, var_dir=None: target)  # no kube config here
    assert prediction_log_dir(get_settings()) == directory  # what serving_quality and `endpoint stats` read
    assert asked == [("fin-blue-7d9f-x2x", "scoring", 15 * 60 + 60)]  # the window (15 min) and a minute more
    files = ["feedback", "fin-blue-7d9f-x2x.inputs.jsonl", "fin-blue-7d9f-x2x.jsonl"]
    assert sorted(p.name for p in directory.iterdir()) == files  # with the labels posted to the pod: none here
    assert (directory / "feedback" / "fin-blue-7d9f-x2x.jsonl").read_text() == ""
    assert main(["endpoint", "stats"]) == 0  # the command too, with the Kubernetes target configured
    assert "21 requests in 1 log file(s)" in capsys.readouterr().out

    window = read_window(directory, time.time() - 600, time.time(), max_sampled=1_000)
    traffic = window.versions["7"]
    assert traffic.requests == 21 and traffic.outcomes == {200: 20, 422: 1} and traffic.logged == 20
    columns, probabilities = traffic.sample(list(bundle[1][0]))
    assert len(probabilities) == 20 and columns["age"] == [record["age"] for record in bundle[1][:20]]


def test_a_pod_log_the_platform_may_not_read_is_named_with_the_permission_it_needs():
    cluster = FakeCluster()
    serving = SimpleNamespace(version="1", info=SimpleNamespace(digest="d"))  # what the manifest reads of a release
    cluster.objects[("deployment", "fin-blue")] = k8s.deployment_manifest(CONFIG, serving, "blue", "image")
    cluster.core.read_namespaced_pod_log.side_effect = _api_error(403, "Forbidden")
    with pytest.raises(RolloutError, match="needs `get` on `pods/log` in namespace serving"):
        _target(cluster).prediction_logs(60)
