"""The Kubernetes target: the same blue/green rollout (rollout.py) on a cluster. A color is a Deployment of the
version's serving image (by digest), with its own ClusterIP Service so the gates reach it before it has any
traffic; the endpoint is one Service whose selector names the live color, so the switch, and the rollback, is
one change of that selector. The API keys are a Secret mounted where the image reads them.

The gates and the public URL are reached through the API server's service proxy
(`/api/v1/namespaces/<ns>/services/<name>:http/proxy/score`), so the platform needs no network path into the
cluster beyond its kube config: latency measured that way includes the proxy hop.

Only the official client's public APIs are used (AppsV1Api, CoreV1Api, and ApiClient.call_api for the proxy,
whose generated methods take no body), so the tests check every call with autospec'd fakes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fin_behavior.deploy.image import KEYS_DIR, PORT, USER_ID
from fin_behavior.deploy.rollout import Release, RolloutError, Slot, answers_of

COLOR_LABEL = "fin-behavior.io/color"
VERSION_LABEL = "fin-behavior.io/model-version"
FIELD_MANAGER = "fin-behavior"
STUCK = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError")


@dataclass(frozen=True)
class KubernetesConfig:
    namespace: str
    app: str  # the endpoint's Service; its Deployments are <app>-blue and <app>-green
    replicas: int
    service_type: str  # ClusterIP, NodePort or LoadBalancer
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    ready_timeout_seconds: float
    poll_seconds: float = 2.0


def _labels(config: KubernetesConfig, color: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "fin-behavior", "app.kubernetes.io/instance": config.app}
    return labels | ({COLOR_LABEL: color} if color else {})


def _meta(name: str, config: KubernetesConfig, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": config.namespace, "labels": labels, **extra}


def secret_manifest(config: KubernetesConfig, keys_json: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(f"{config.app}-keys", config, _labels(config)),
        "type": "Opaque",
        "stringData": {"keys.json": keys_json},
    }


def deployment_manifest(config: KubernetesConfig, release: Release, color: str, image: str) -> dict[str, Any]:
    labels = _labels(config, color) | {VERSION_LABEL: release.version}
    probe = {"port": "http"}
    container = {
        "name": "scoring",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", **probe}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health", **probe}, "periodSeconds": 10, "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/health", **probe}, "periodSeconds": 2, "failureThreshold": 60},
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {"cpu": config.cpu_limit, "memory": config.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(
            f"{config.app}-{color}", config, labels, annotations={"fin-behavior.io/bundle-digest": release.info.digest}
        ),
        "spec": {
            "replicas": config.replicas,
            "selector": {"matchLabels": _labels(config, color)},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    # fsGroup: the Secret's files (mode 0440) belong to this group, so the service can read its keys
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": USER_ID,
                        "runAsGroup": USER_ID,
                        "fsGroup": USER_ID,
                    },
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": [
                        {"name": "keys", "secret": {"secretName": f"{config.app}-keys", "defaultMode": 0o440}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def service_manifest(config: KubernetesConfig, name: str, color: str, service_type: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, config, _labels(config)),
        "spec": {
            "type": service_type,
            "selector": _labels(config, color),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _missing(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 404


class KubernetesTarget:
    name = "kubernetes"
    splits_traffic = False  # a Service selector names one color: the switch is whole

    def __init__(self, apps, core, config: KubernetesConfig, image_for: Callable[[Release], str], keys_json: str):
        """`apps`, `core`: kubernetes.client AppsV1Api and CoreV1Api; `image_for`: the release's image reference
        (by digest); `keys_json`: the endpoint's keys file, put in the cluster as a Secret."""
        self.apps, self.core, self.config, self.image_for, self.keys_json = apps, core, config, image_for, keys_json

    @property
    def url(self) -> str:
        service = self._read_service(self.config.app)
        ingress = service and service.status and service.status.load_balancer and service.status.load_balancer.ingress
        if ingress:
            return f"http://{ingress[0].ip or ingress[0].hostname}"
        return f"http://{self.config.app}.{self.config.namespace}.svc.cluster.local"

    # What runs ---------------------------------------------------------------------------------------------

    def _read_service(self, name: str):
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.read_namespaced_service(name, self.config.namespace)
        except ApiException as exc:
            if _missing(exc):
                return None
            raise

    def live(self) -> Slot | None:
        service = self._read_service(self.config.app)
        if service is None:
            return None
        from kubernetes.client.exceptions import ApiException

        color = service.spec.selector[COLOR_LABEL]
        try:
            deployment = self.apps.read_namespaced_deployment(f"{self.config.app}-{color}", self.config.namespace)
        except ApiException as exc:
            if _missing(exc):  # the Service names a color that is gone: nothing serves
                return None
            raise
        return Slot(color, deployment.metadata.labels[VERSION_LABEL], {"deployment": deployment.metadata.name})

    # Changes -----------------------------------------------------------------------------------------------

    def _apply(self, kind: str, manifest: dict[str, Any]) -> None:
        """Server-side apply: created if absent, else made to match the manifest (fields this target owns)."""
        api = self.apps if kind == "deployment" else self.core
        getattr(api, f"patch_namespaced_{kind}")(
            manifest["metadata"]["name"],
            self.config.namespace,
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def _delete(self, kind: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        api = self.apps if kind == "deployment" else self.core
        try:
            getattr(api, f"delete_namespaced_{kind}")(name, self.config.namespace)
        except ApiException as exc:
            if not _missing(exc):
                raise

    def start(self, release: Release, color: str) -> Slot:
        name = f"{self.config.app}-{color}"
        image = self.image_for(release)
        self._apply("secret", secret_manifest(self.config, self.keys_json))
        self._apply("deployment", deployment_manifest(self.config, release, color, image))
        self._apply("service", service_manifest(self.config, name, color, "ClusterIP"))
        slot = Slot(color, release.version, {"deployment": name, "image": image})
        reason = self._wait_ready(slot)
        if reason is not None:
            tail = self.logs(slot, 40)
            self.discard(slot)
            raise RolloutError(f"v{release.version} did not become ready on {color}: {reason}", tail)
        return slot

    def _wait_ready(self, slot: Slot) -> str | None:
        deadline = time.monotonic() + self.config.ready_timeout_seconds
        while True:
            if self.ready(slot):
                return None
            if stuck := self._stuck(slot):
                return stuck
            if time.monotonic() >= deadline:
                return f"not ready within {self.config.ready_timeout_seconds:g} s"
            time.sleep(self.config.poll_seconds)

    def _pods(self, slot: Slot) -> list:
        selector = ",".join(f"{k}={v}" for k, v in _labels(self.config, slot.color).items())
        return self.core.list_namespaced_pod(self.config.namespace, label_selector=selector).items

    def _stuck(self, slot: Slot) -> str | None:
        """A reason no wait will cure (the image cannot be pulled, the container keeps crashing)."""
        for pod in self._pods(slot):
            for status in (pod.status and pod.status.container_statuses) or []:
                waiting = status.state and status.state.waiting
                if waiting and waiting.reason in STUCK:
                    return f"pod {pod.metadata.name}: {waiting.reason}: {waiting.message or ''}".strip()
        return None

    def ready(self, slot: Slot | None) -> bool:
        slot = slot or self.live()
        if slot is None:
            return False
        name, wanted = slot.detail["deployment"], self.config.replicas
        status = self.apps.read_namespaced_deployment_status(name, self.config.namespace).status
        return (status.ready_replicas or 0) >= wanted and (status.updated_replicas or 0) >= wanted

    def score(self, slot: Slot | None, records: list[dict]) -> tuple[list[float], str]:
        service = f"{self.config.app}-{slot.color}" if slot else self.config.app
        body = self.core.api_client.call_api(
            f"/api/v1/namespaces/{self.config.namespace}/services/{service}:http/proxy/score",
            "POST",
            header_params={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-API-Key": self._probe_key(),
            },
            body=records,
            response_types_map={200: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=30,
        )
        return answers_of(body), body["model_version"]

    def _probe_key(self) -> str:
        """The platform's probe key when the keys carry one (its requests are then kept out of the monitored
        traffic, see serving/config.py), else the client key."""
        keys = json.loads(self.keys_json)
        return (keys.get("probe_keys") or keys["keys"])[0]

    def switch(self, new: Slot, old: Slot | None) -> None:
        self._apply("service", service_manifest(self.config, self.config.app, new.color, self.config.service_type))

    def shift(self, new: Slot, old: Slot, percent: int) -> None:
        raise NotImplementedError("a Service selector cannot split traffic; canary steps are not taken here")

    def switch_back(self, new: Slot, old: Slot | None) -> None:
        if old is None:
            self._delete("service", self.config.app)
        else:
            self._apply("service", service_manifest(self.config, self.config.app, old.color, self.config.service_type))

    def retire(self, slot: Slot, keep: bool) -> None:
        if not keep:
            self.discard(slot)

    def challenge(self, slot: Slot, mode: str, share: float, timeout: float) -> None:
        raise RolloutError(
            f"the Kubernetes target cannot {mode} a challenger: its Service selects one color whole, with no "
            "share and no copy of requests (that needs a service mesh, e.g. an Istio VirtualService's `mirror` and "
            "route weights, which this target does not manage). Run the challenger on the local or azureml target"
        )

    def challenger(self) -> Slot | None:
        return None  # never one: see challenge

    def end_challenge(self, slot: Slot) -> None:
        self.discard(slot)

    def discard(self, slot: Slot) -> None:
        self._delete("deployment", slot.detail["deployment"])
        self._delete("service", slot.detail["deployment"])

    def prediction_logs(self, since_seconds: int) -> dict[str, str]:
        """What each pod of the endpoint (either color) wrote to standard output in the last `since_seconds`:
        its prediction lines, among its own log lines. A pod whose container has not started has none."""
        from kubernetes.client.exceptions import ApiException

        selector = ",".join(f"{k}={v}" for k, v in _labels(self.config).items())
        logs = {}
        for pod in self.core.list_namespaced_pod(self.config.namespace, label_selector=selector).items:
            name = pod.metadata.name
            try:
                logs[name] = self.core.read_namespaced_pod_log(
                    name, self.config.namespace, container="scoring", since_seconds=since_seconds
                )
            except ApiException as exc:
                if exc.status not in (400, 404):  # waiting to start, or gone meanwhile: nothing to read
                    raise RolloutError(
                        f"cannot read the log of pod {name}: HTTP {exc.status} {exc.reason}; the platform's account "
                        f"needs `get` on `pods/log` in namespace {self.config.namespace}"
                    ) from None
        return logs

    def logs(self, slot: Slot, lines: int) -> str:
        from kubernetes.client.exceptions import ApiException

        parts = []
        for pod in self._pods(slot)[:2]:
            try:
                log = self.core.read_namespaced_pod_log(pod.metadata.name, self.config.namespace, tail_lines=lines)
            except ApiException as exc:
                log = f"(no log: {exc.reason})"
            parts.append(f"--- pod {pod.metadata.name} ---\n{log}")
        return "\n".join(parts)
