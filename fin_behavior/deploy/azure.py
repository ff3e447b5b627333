"""The Azure ML target: the same blue/green rollout (rollout.py) on a managed online endpoint. A color is a
deployment, traffic is the endpoint's traffic map, the new color is tested by invoking it by name before it
gets any traffic. Azure has no automatic rollback, so `rollout` moves the traffic back itself.

Only the SDK's public `*Operations` are used (endpoints, deployments, models, environments), so tests can
check every call with `create_autospec` fakes; azure-ai-ml is imported lazily (seconds of imports).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fin_behavior.deploy.rollout import Release, RolloutError, Slot, answers_of
from fin_behavior.environments.builder import EnvironmentBuildError, locked_resolution

_PACKAGE = Path(__file__).resolve().parents[1]  # fin_behavior/: its light part ships with score.py
SCORE_SCRIPT = "score.py"


class AzureConfigError(RuntimeError):
    """Azure is not configured (or not reachable with these credentials); nothing was created."""


def _conflict(exc: BaseException) -> bool:
    from azure.core.exceptions import HttpResponseError

    return isinstance(exc, HttpResponseError) and exc.status_code == 409


@dataclass(frozen=True)
class AzureConfig:
    subscription_id: str
    resource_group: str
    workspace_name: str
    endpoint_name: str
    instance_type: str  # the seeds' lesson: smaller SKUs than the default ran out of quota or memory
    instance_count: int
    request_timeout_ms: int
    max_concurrent_requests_per_instance: int
    log_sample_rate: float  # share of scored requests logged (stdout lines) and collected with their inputs
    base_image: str = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
    # Azure refuses a second operation on an endpoint while one runs (409 Conflict): wait and try again, with
    # exponential waits from conflict_wait_seconds, at most conflict_attempts times, then refuse cleanly.
    conflict_attempts: int = 6
    conflict_wait_seconds: float = 5.0
    # The bundle loads in seconds; the container pulls and conda-installs first, so readiness waits longer.
    probe_initial_delay_seconds: int = 30
    probe_period_seconds: int = 10
    probe_failure_threshold: int = 30


def workspace_from(settings_values: dict[str, str], config_file: Path | None) -> tuple[str, str, str]:
    """(subscription, resource group, workspace) from settings, then AZURE_* variables, then an Azure ML
    config.json; missing pieces are named together."""
    keys = {
        "subscription_id": "AZURE_SUBSCRIPTION_ID",
        "resource_group": "AZURE_RESOURCE_GROUP",
        "workspace_name": "AZURE_WORKSPACE_NAME",
    }
    from_file: dict[str, str] = {}
    if config_file is not None and config_file.is_file():
        try:
            from_file = json.loads(config_file.read_text())
        except ValueError as exc:
            raise AzureConfigError(
                f"{config_file} is not valid JSON ({exc}); download it again from the workspace"
            ) from None
    values = {
        key: settings_values.get(key) or os.environ.get(env, "") or from_file.get(key, "") for key, env in keys.items()
    }
    missing = [f"{key} (FIN_BEHAVIOR_AZURE_{key.upper()} or {keys[key]})" for key, value in values.items() if not value]
    if missing:
        where = f" or {config_file}" if config_file else ""
        raise AzureConfigError(
            f"the Azure ML target needs {', '.join(missing)}{where}; set them, or set DEPLOYMENT_TARGET=local"
        )
    return values["subscription_id"], values["resource_group"], values["workspace_name"]


def ml_client(subscription_id: str, resource_group: str, workspace_name: str):
    """An MLClient with DefaultAzureCredential, proven usable before anything is created."""
    from azure.ai.ml import MLClient
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.identity import DefaultAzureCredential

    client = MLClient(DefaultAzureCredential(), subscription_id, resource_group, workspace_name)
    try:
        client.workspaces.get(workspace_name)
    except ClientAuthenticationError as exc:
        raise AzureConfigError(
            f"Azure authentication failed ({exc.message.splitlines()[0]}); sign in with `az login` or set "
            "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET for a service principal"
        ) from None
    except HttpResponseError as exc:
        raise AzureConfigError(f"workspace {workspace_name!r} is not reachable: {exc.message}") from None
    return client


def conda_file(name: str, python_version: str, pins: tuple[str, ...]) -> dict[str, Any]:
    """The serving environment as Azure builds it: the Python and exactly the pins the bundle was verified with."""
    return {
        "name": name,
        "channels": ["conda-forge"],
        "dependencies": [f"python={python_version}", "pip", {"pip": list(pins)}],
    }


def write_scoring_code(directory: Path) -> Path:
    """score.py plus the light fin_behavior package it imports (bundle verification, validation)."""
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(
        _PACKAGE, directory / "fin_behavior", ignore=shutil.ignore_patterns("__pycache__", "defs", "deploy")
    )
    shutil.copy(_PACKAGE / "serving" / "azure_score.py", directory / SCORE_SCRIPT)
    return directory


class AzureMLTarget:
    name = "azureml"
    splits_traffic = True  # the endpoint's traffic map takes any shares: canary steps apply

    def __init__(self, client, config: AzureConfig, envs_dir: Path, workdir: Path):
        self.client, self.config, self.envs_dir, self.workdir = client, config, envs_dir, workdir

    @property
    def url(self) -> str:
        endpoint = self._endpoint()
        return endpoint.scoring_uri if endpoint is not None else f"azureml://{self.config.endpoint_name}"

    def _change(self, operation: Callable[[], Any], what: str) -> Any:
        """An operation that changes the endpoint, tried again while another operation holds it (409)."""
        import tenacity
        from azure.core.exceptions import HttpResponseError

        c = self.config
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_conflict),
            stop=tenacity.stop_after_attempt(c.conflict_attempts),
            wait=tenacity.wait_exponential(multiplier=c.conflict_wait_seconds, max=60),
            reraise=True,
        )
        try:
            return retrying(operation)
        except HttpResponseError as exc:
            if not _conflict(exc):
                raise
            raise RolloutError(
                f"{what}: another operation is in progress on endpoint {c.endpoint_name} (409 Conflict, "
                f"{c.conflict_attempts} attempts): {exc.message}. Nothing more was changed; run again when it has "
                "finished (`az ml online-endpoint show` tells what it is doing)"
            ) from None

    def _endpoint(self):
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.client.online_endpoints.get(self.config.endpoint_name)
        except ResourceNotFoundError:
            return None

    def live(self) -> Slot | None:
        endpoint = self._endpoint()
        # the color with most of the traffic: after a run cut off mid-canary, the old one still holds the majority
        shares = {color: share for color, share in (endpoint.traffic or {}).items() if share > 0} if endpoint else {}
        if not shares:
            return None
        color = max(shares, key=shares.__getitem__)
        deployment = self.client.online_deployments.get(color, self.config.endpoint_name)
        return Slot(color, deployment.tags.get("model_version", "?"), {"deployment": color})

    def _ensure_endpoint(self) -> None:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        if self._endpoint() is None:
            endpoint = ManagedOnlineEndpoint(
                name=self.config.endpoint_name, auth_mode="key", description="fin_behavior HighAmount model"
            )
            self._change(
                lambda: self.client.online_endpoints.begin_create_or_update(endpoint).result(), "creating the endpoint"
            )

    def deployment(self, release: Release, color: str, model: Any, environment: Any):
        from azure.ai.ml.entities import (
            CodeConfiguration,
            DataCollector,
            DeploymentCollection,
            ManagedOnlineDeployment,
            OnlineRequestSettings,
            ProbeSettings,
        )

        c = self.config
        probe = {"initial_delay": c.probe_initial_delay_seconds, "period": c.probe_period_seconds, "timeout": 5}
        return ManagedOnlineDeployment(
            name=color,
            endpoint_name=c.endpoint_name,
            model=model,
            environment=environment,
            code_configuration=CodeConfiguration(
                code=str(write_scoring_code(self.workdir / f"code-{color}")), scoring_script=SCORE_SCRIPT
            ),
            instance_type=c.instance_type,
            instance_count=c.instance_count,
            request_settings=OnlineRequestSettings(
                request_timeout_ms=c.request_timeout_ms,
                max_concurrent_requests_per_instance=c.max_concurrent_requests_per_instance,
            ),
            liveness_probe=ProbeSettings(failure_threshold=c.probe_failure_threshold, **probe),
            readiness_probe=ProbeSettings(failure_threshold=c.probe_failure_threshold, **probe),
            # one worker per concurrent request the platform lets through, as the seeds learned
            # Azure ML's model data collection of what score.py collects (inputs, outputs), besides its stdout lines
            data_collector=DataCollector(
                collections={
                    "model_inputs": DeploymentCollection(enabled="true"),
                    "model_outputs": DeploymentCollection(enabled="true"),
                },
                sampling_rate=c.log_sample_rate,
            ),
            environment_variables={
                "WORKER_COUNT": str(c.max_concurrent_requests_per_instance),
                "FIN_BEHAVIOR_LOG_SAMPLE_RATE": str(c.log_sample_rate),
                "FIN_BEHAVIOR_MODEL_VERSION": release.version,
                "FIN_BEHAVIOR_BUNDLE_DIGEST": release.info.digest,  # score.py refuses any other manifest
            },
            tags={"model_version": release.version, "model_name": release.model_name},
        )

    def start(self, release: Release, color: str) -> Slot:
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Environment, Model
        from azure.core.exceptions import HttpResponseError

        slot = Slot(color, release.version, {"deployment": color})
        name, fingerprint = release.info.serving_environment, release.info.environment_fingerprint
        try:
            built = locked_resolution(*release.environment, self.envs_dir)
        except EnvironmentBuildError as exc:
            raise RolloutError(f"v{release.version}: {exc}") from exc
        try:
            self._ensure_endpoint()
            model = self.client.models.create_or_update(
                Model(
                    name=release.model_name,
                    version=release.version,
                    path=str(release.bundle),
                    type=AssetTypes.CUSTOM_MODEL,
                    tags={k: v for k, v in release.info.to_dict().items() if isinstance(v, str)},
                )
            )
            environment = self.client.environments.create_or_update(
                Environment(
                    name=f"fin-behavior-{name.replace('.', '-')}",
                    version=fingerprint,
                    image=self.config.base_image,
                    conda_file=conda_file(name, *built),
                )
            )
            deployment = self.deployment(release, color, model, environment)
            deployed = self._change(
                lambda: self.client.online_deployments.begin_create_or_update(deployment).result(),
                f"creating deployment {color}",
            )
        except HttpResponseError as exc:
            self._fail(slot, f"deployment {color} of v{release.version} failed: {exc.message}")
        if deployed.provisioning_state != "Succeeded":
            self._fail(slot, f"deployment {color} of v{release.version} ended {deployed.provisioning_state}")
        return slot

    def _fail(self, slot: Slot, reason: str) -> None:
        """A deployment that did not come up: keep its logs for the failure, then remove it (it has no traffic)."""
        tail = self.logs(slot, 40)
        self.discard(slot)
        raise RolloutError(reason, tail)

    def score(self, slot: Slot | None, records: list[dict]) -> tuple[list[float], str]:
        request = self.workdir / "request.json"
        request.parent.mkdir(parents=True, exist_ok=True)
        request.write_text(json.dumps(records))
        raw = self.client.online_endpoints.invoke(
            self.config.endpoint_name, request_file=str(request), deployment_name=slot.color if slot else None
        )
        answer = json.loads(raw)
        if isinstance(answer, str):  # score.py answers a JSON document; some SDK paths double-encode it
            answer = json.loads(answer)
        return answers_of(answer), answer["model_version"]

    def _traffic(self, traffic: dict[str, int]) -> None:
        endpoint = self._endpoint()
        endpoint.traffic = traffic
        self._change(
            lambda: self.client.online_endpoints.begin_create_or_update(endpoint).result(),
            f"moving traffic to {traffic}",
        )

    def switch(self, new: Slot, old: Slot | None) -> None:
        self._traffic({new.color: 100} | ({old.color: 0} if old else {}))

    def shift(self, new: Slot, old: Slot, percent: int) -> None:
        self._traffic({new.color: percent, old.color: 100 - percent})

    def switch_back(self, new: Slot, old: Slot | None) -> None:
        self._traffic({new.color: 0} | ({old.color: 100} if old else {}))

    # Champion and challenger: Azure ML's own mirror and traffic map (deploy/challengers.py) ------------------

    def challenge(self, slot: Slot, mode: str, share: float, timeout: float) -> None:
        """A shadow is the endpoint's `mirror_traffic` (Azure copies that share of live requests to the deployment
        and discards its answers; at most 50%); a split is its traffic map. Both take whole percents. Azure routes
        a split by weight per request: it is not sticky per subject (X-Subject-ID is not honoured), and its
        timeout is the deployment's request_timeout_ms, not `timeout`. A split stays below half: which deployment
        is live is read from the traffic map's majority (a run cut off mid-canary must find the old one live)."""
        percent = round(share * 100)
        if abs(percent - share * 100) > 1e-9 or not 1 <= percent <= 100:
            raise RolloutError(f"Azure ML takes a challenger's share in whole percents from 1 to 100, not {share:g}")
        live = self.live()
        if live is None:
            raise RolloutError(f"nothing serves on endpoint {self.config.endpoint_name}: no traffic to challenge")
        if mode == "split" and percent >= 50:
            raise RolloutError(f"an Azure ML split gives the challenger less than half the traffic, not {percent}%")
        if mode == "shadow":
            if percent > 50:
                raise RolloutError(f"Azure ML mirrors at most 50% of an endpoint's traffic, not {percent}%")
            endpoint = self._endpoint()
            endpoint.mirror_traffic = {slot.color: percent}
            self._change(
                lambda: self.client.online_endpoints.begin_create_or_update(endpoint).result(),
                f"mirroring {percent}% of the traffic to {slot.color}",
            )
        else:
            self._traffic({live.color: 100 - percent, slot.color: percent})

    def challenger(self) -> Slot | None:
        endpoint, live = self._endpoint(), self.live()
        if endpoint is None or live is None:
            return None
        shares = {**(endpoint.traffic or {}), **(endpoint.mirror_traffic or {})}
        color = next((c for c, share in shares.items() if share > 0 and c != live.color), None)
        if color is None:
            return None
        deployment = self.client.online_deployments.get(color, self.config.endpoint_name)
        return Slot(color, deployment.tags.get("model_version", "?"), {"deployment": color})

    def end_challenge(self, slot: Slot) -> None:
        endpoint, live = self._endpoint(), self.live()
        endpoint.mirror_traffic = {}
        endpoint.traffic = {slot.color: 0} | ({live.color: 100} if live and live.color != slot.color else {})
        self._change(
            lambda: self.client.online_endpoints.begin_create_or_update(endpoint).result(),
            f"ending the challenger {slot.color}",
        )
        self.retire(slot, keep=False)

    def ready(self, slot: Slot | None) -> bool:
        if slot is None:
            endpoint = self._endpoint()
            return (
                endpoint is not None
                and endpoint.provisioning_state == "Succeeded"
                and any(share == 100 for share in (endpoint.traffic or {}).values())
            )
        return (
            self.client.online_deployments.get(slot.color, self.config.endpoint_name).provisioning_state == "Succeeded"
        )

    def retire(self, slot: Slot, keep: bool) -> None:
        if not keep:  # it has 0% traffic by now; Azure refuses to delete a deployment that still has some
            self._change(
                lambda: self.client.online_deployments.begin_delete(slot.color, self.config.endpoint_name).result(),
                f"deleting the replaced deployment {slot.color}",
            )

    def discard(self, slot: Slot) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError, HttpResponseError):  # never created, or already gone
            self.client.online_deployments.begin_delete(slot.color, self.config.endpoint_name).result()

    def logs(self, slot: Slot, lines: int = 40) -> str:
        from azure.core.exceptions import HttpResponseError

        try:
            return self.client.online_deployments.get_logs(slot.color, self.config.endpoint_name, lines)
        except HttpResponseError as exc:
            return f"(logs unavailable: {exc.message})"
