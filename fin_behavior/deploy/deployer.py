"""Deploying a registered model version: check its evidence, fetch and verify its bundle, roll it out on the
configured target, and move the registry aliases only when it serves. Every path to the URL goes through
here: the live_deployment asset (full_pipeline, deploy, rollback jobs and sensor runs) and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fin_behavior.deploy.local import LocalTarget, ensure_keys, ensure_probe_key
from fin_behavior.deploy.lock import exclusive_rollout
from fin_behavior.deploy.rollout import (
    GateSettings,
    Release,
    RolloutError,
    RolloutResult,
    Slot,
    Target,
    answering,
    latency,
    rollout,
    smoke,
)
from fin_behavior.governance import approval, audit
from fin_behavior.ml import registry
from fin_behavior.ml.registry_view import RegistryView
from fin_behavior.outcome import Outcome
from fin_behavior.records import BundleFiles, NotApprovedError, read_json
from fin_behavior.serving.bundle import BundleError, verify_bundle
from fin_behavior.settings import Settings

ENDPOINT_CHECKS = ("health", "smoke", "served_version_is_production", "latency_p95")


class DeployError(RuntimeError):
    """Nothing to deploy, or it cannot be fetched; nothing was started."""


@dataclass(frozen=True)
class Deployment:
    release: Release
    serving: Slot
    result: RolloutResult | None  # None: that version was already serving, nothing moved
    replaced_production: str | None


def endpoint_dir(settings: Settings, var_dir: Path | None = None) -> Path:
    return settings.endpoint_dir or (var_dir or settings.var_dir) / "endpoint"


def releases_dir(settings: Settings, var_dir: Path | None = None) -> Path:
    return endpoint_dir(settings, var_dir) / "releases"


def prediction_log_home(settings: Settings, var_dir: Path | None = None) -> Path:
    """Where the monitor reads the prediction log: MONITOR_LOG_DIR, or the local colors' files, or where the
    Kubernetes pods' lines are collected."""
    from fin_behavior.deploy.local import PREDICTIONS_DIR

    below = ("kubernetes",) if settings.deployment_target == "kubernetes" else ()
    return settings.monitor_log_dir or endpoint_dir(settings, var_dir).joinpath(*below, PREDICTIONS_DIR)


def prediction_log_dir(settings: Settings, var_dir: Path | None = None) -> Path:
    """The prediction log, up to date. On Kubernetes the pods write it to standard output: the window's lines
    are collected now, through the API server, one pair of files per pod."""
    directory = prediction_log_home(settings, var_dir)
    if settings.deployment_target != "kubernetes":
        return directory
    from fin_behavior.deploy.kubernetes import KubernetesTarget
    from fin_behavior.monitoring.collect import write_split

    try:
        target = make_target(settings, var_dir)
        if not isinstance(target, KubernetesTarget):  # deployment_target is kubernetes (above): make_target made one
            raise DeployError(f"the prediction log is collected from Kubernetes pods, not from a {target.name} target")
        logs = target.prediction_logs(int(settings.monitor_window_minutes * 60) + 60)
    except RolloutError as exc:
        raise DeployError(str(exc)) from None
    for pod, text in logs.items():
        write_split(text, directory, pod)
    return directory


def make_target(settings: Settings, var_dir: Path | None = None) -> Target:
    envs = settings.envs_dir or (var_dir or settings.var_dir) / "envs"
    if settings.deployment_target == "azureml":
        return azure_target(settings, envs, endpoint_dir(settings, var_dir) / "azureml")
    if settings.deployment_target == "kubernetes":
        return kubernetes_target(settings, envs, endpoint_dir(settings, var_dir) / "kubernetes")
    if settings.deployment_target != "local":
        raise DeployError(
            f"unknown deployment target {settings.deployment_target!r} (setting deployment_target); "
            "available: local, azureml, kubernetes"
        )
    return LocalTarget(endpoint_dir(settings, var_dir), envs, settings)


def azure_target(settings: Settings, envs: Path, workdir: Path) -> Target:
    from fin_behavior.deploy import azure

    given = {
        "subscription_id": settings.azure_subscription_id,
        "resource_group": settings.azure_resource_group,
        "workspace_name": settings.azure_workspace_name,
    }
    try:
        workspace = azure.workspace_from(given, settings.azure_config_file)
        client = azure.ml_client(*workspace)
    except azure.AzureConfigError as exc:
        raise DeployError(str(exc)) from None
    config = azure.AzureConfig(
        *workspace,
        endpoint_name=settings.azure_endpoint_name,
        instance_type=settings.azure_instance_type,
        instance_count=settings.azure_instance_count,
        request_timeout_ms=settings.azure_request_timeout_ms,
        max_concurrent_requests_per_instance=settings.azure_max_concurrent_requests_per_instance,
        log_sample_rate=settings.prediction_log_sample_rate,
    )
    return azure.AzureMLTarget(client, config, envs, workdir)


def kubernetes_target(settings: Settings, envs: Path, workdir: Path) -> Target:
    """The cluster of the kube config (or of the pod this runs in); each version served from its pushed image."""
    import kubernetes

    from fin_behavior.deploy import image
    from fin_behavior.deploy import kubernetes as k8s

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config()
        else:
            kubernetes.config.load_kube_config(context=settings.kubernetes_context or None)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise DeployError(
            f"the Kubernetes target has no cluster to talk to ({exc}); point KUBECONFIG at a kube config (and "
            "FIN_BEHAVIOR_KUBERNETES_CONTEXT at a context), or set DEPLOYMENT_TARGET=local"
        ) from None

    def image_for(release: Release) -> str:
        """The release's image as the cluster pulls it, by digest: built and pushed now if it was not yet."""
        built = image.BuiltImage.load(settings.images_dir, release.model_name, release.version)
        if built is None or not built.reference:
            if not settings.image_registry:
                raise RolloutError(
                    f"{release.model_name} v{release.version} has no image the cluster can pull: set "
                    "FIN_BEHAVIOR_IMAGE_REGISTRY to the registry the cluster pulls from"
                )
            try:
                built = built or image.build(release, envs, workdir / "build", settings.image_base)
                built = image.push(built, settings.image_registry)
            except image.ImageError as exc:
                raise RolloutError(f"the image of v{release.version} could not be built and pushed: {exc}") from None
            built.save(settings.images_dir)
        return built.reference

    config = k8s.KubernetesConfig(
        namespace=settings.kubernetes_namespace,
        app=settings.kubernetes_app,
        replicas=settings.kubernetes_replicas,
        service_type=settings.kubernetes_service_type,
        cpu_request=settings.kubernetes_cpu_request,
        cpu_limit=settings.kubernetes_cpu_limit,
        memory_request=settings.kubernetes_memory_request,
        memory_limit=settings.kubernetes_memory_limit,
        ready_timeout_seconds=settings.kubernetes_ready_timeout_seconds,
    )
    keys_file = workdir / "keys.json"
    keys = json.dumps({"keys": [ensure_keys(keys_file)], "probe_keys": [ensure_probe_key(keys_file)]})
    client = kubernetes.client
    return k8s.KubernetesTarget(client.AppsV1Api(), client.CoreV1Api(), config, image_for, keys)


def build_image(client, settings: Settings, ref: str, push: bool, var_dir: Path | None = None, log=print):
    """The serving image of registered version `ref` (its evidence checked, its bundle verified), gated
    running; pushed (with `push` and IMAGE_REGISTRY) and recorded only if it passes: (image, gate outcomes).
    What the build_image job and `fin-behavior image build` run."""
    from fin_behavior.deploy import image

    if why := image.engine_available():  # before fetching anything
        raise image.ImageError(why)
    name = settings.registered_model_name
    release = fetch_release(client, name, resolve_version(client, name, ref), releases_dir(settings, var_dir))
    return image.build_gated(
        release,
        settings.envs_dir or (var_dir or settings.var_dir) / "envs",
        settings.images_dir / "build",
        settings.image_base,
        GateSettings.from_settings(settings),
        settings.image_registry if push else "",
        settings.images_dir,
        log,
    )


def resolve_version(client, name: str, ref: str) -> str:
    """`ref` is an alias (candidate, production, previous) or a version number."""
    if ref.isdigit():
        return ref
    version = registry.alias_version(client, name, ref)
    if version is None:
        raise DeployError(
            f"no version of {name!r} has the alias {ref!r} yet; register one first (full_pipeline or retrain) "
            "or name a version number"
        )
    return version


def fetch_release(
    client, name: str, version: str, releases: Path, required: tuple[str, ...] = registry.EVIDENCE_STAGES
) -> Release:
    """The registered bundle in `releases/<version>`, once the version's evidence passed and every file matches
    the manifest whose digest the registry recorded. A cached copy is verified like a download, and replaced by
    a fresh download when it does not match."""
    from mlflow.exceptions import MlflowException

    try:
        tags = registry.require_evidence(client, name, version, required)
    except NotApprovedError as exc:
        raise DeployError(str(exc)) from None
    except MlflowException as exc:
        raise DeployError(f"cannot read {name} version {version} from the registry: {exc.message}") from None
    final = releases / version
    for cached in (final.exists(), False):
        if not cached:
            _download(client, name, version, final)
        try:
            verify_bundle(final, tags.get(registry.BUNDLE_TAG))
            return load_release(name, version, final)
        except BundleError as exc:
            if not cached:
                raise DeployError(f"{name} version {version} cannot be served: {exc}") from None
    raise AssertionError("unreachable")


def _download(client, name: str, version: str, final: Path) -> None:
    """Whole or not at all: into a temporary sibling, then moved into place."""
    from mlflow.exceptions import MlflowException

    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        try:
            run_id = client.get_model_version(name, version).run_id
            downloaded = client.download_artifacts(run_id, "bundle", tmp)
        except MlflowException as exc:
            raise DeployError(f"cannot fetch {name} version {version} from the registry: {exc.message}") from None
        shutil.rmtree(final, ignore_errors=True)
        Path(downloaded).rename(final)


def load_release(name: str, version: str, bundle: Path) -> Release:
    info = verify_bundle(bundle)
    return Release(name, version, bundle, info, read_json(bundle / BundleFiles.EXPECTED))


def live_release(target: Target, settings: Settings, name: str, var_dir: Path | None = None) -> Release | None:
    live = target.live()
    if live is None:
        return None
    try:
        return load_release(name, live.version, releases_dir(settings, var_dir) / live.version)
    except BundleError:
        return None


def endpoint_checks(
    target: Target, release: Release | None, production: str | None, settings: Settings
) -> dict[str, Outcome]:
    """What a client of the URL would see: ready, known records scored, the version, the latency."""
    if release is None:
        down = Outcome(False, "down", "serving", f"nothing serves at {target.url}; run the deploy job")
        return dict.fromkeys(ENDPOINT_CHECKS, down)

    def score(records: list[dict]) -> tuple[list[float], str]:
        return target.score(None, records)

    ready = target.ready(None)
    smoked = smoke(score, release)
    return {
        "health": Outcome(ready, "ready" if ready else "not ready", "ready", f"{target.url}/ready"),
        "smoke": smoked,
        "served_version_is_production": Outcome(
            smoked.actual == production,
            smoked.actual,
            production or "none",
            f"the URL serves v{smoked.actual}; the registry's production is v{production}",
        ),
        "latency_p95": latency(score, release, settings.gate_latency_requests, settings.max_latency_ms),
    }


def deploy_unchanged(
    view: RegistryView, settings: Settings, ref: str, target: Target, endpoint: Path, *, who: str, log=print
) -> Deployment | None:
    """The nothing-changed path of `deploy`, from the local view of an unchanged registry (registry_view.py), so
    without MLflow: `ref` names the version that is already production and already answers at the URL, its
    evidence passes and its cached bundle verifies. None when any of that is not so: `deploy` then decides."""
    version = ref if ref.isdigit() else view.alias(ref)
    tags = view.tags.get(version or "")
    if version is None or tags is None or view.alias(registry.PRODUCTION) != version:
        return None
    with exclusive_rollout(endpoint, f"{who}: {ref} of {view.model_name}", settings.rollout_lock_timeout_seconds, log):
        live = target.live()
        if live is None or live.version != version:
            return None
        try:
            registry.check_evidence(view.model_name, version, tags)
            approval.require_approved(settings.approval_required, view.model_name, version, tags)
            verify_bundle(endpoint / "releases" / version, tags.get(registry.BUNDLE_TAG))
            release = load_release(view.model_name, version, endpoint / "releases" / version)
        except (NotApprovedError, BundleError):
            return None  # `deploy` says why
        if answering(target, release) != version:
            return None
    log(f"v{version} already serves on {live.color} at {target.url} and is production; nothing to roll out")
    return Deployment(release, live, None, None)


def deploy(
    client,
    settings: Settings,
    name: str,
    ref: str,
    target: Target,
    endpoint: Path,
    *,
    who: str,
    required_stages: tuple[str, ...] = registry.EVIDENCE_STAGES,
    keep_old: bool = False,
    approved: bool = True,
    actor: str = "",
    cause: str = "",
    log: Callable[[str], None] = print,
) -> Deployment:
    """Put version `ref` in service through the gates; on success `production` moves to it (and what it
    replaced becomes `previous`). A RolloutError leaves the aliases and the serving color as they were.

    The whole of it (which version `ref` names, what serves, the rollout, the aliases) happens under the
    endpoint's rollout lock, so two deployments never interleave; `who` says who holds it while it runs.
    The approval policy is checked here, the one place every path to the URL passes, and every step is a
    record of the history, written by `actor` (default: the actor setting, else the OS user) for `cause`
    (e.g. which approval it carries out; `previous` is a rollback)."""
    history = audit.History.of(settings)
    actor = actor or audit.actor(settings.actor)
    with exclusive_rollout(endpoint, f"{who}: {ref} of {name}", settings.rollout_lock_timeout_seconds, log):
        version = resolve_version(client, name, ref)
        cause = cause or ("rollback" if ref == registry.PREVIOUS else "")
        noted = {"target": target.name, "ref": ref, "cause": cause or None, "by": who}
        try:
            approval.require_approved(settings.approval_required, name, version, version_tags(client, name, version))
            release = fetch_release(client, name, version, endpoint / "releases", required_stages)
        except (DeployError, approval.PendingApprovalError) as exc:
            history.append(audit.DEPLOY_FAILED, name, version, actor, **noted, reason=str(exc)[:1_000])
            raise DeployError(str(exc)) from None
        live = target.live()
        result = None
        if live is not None and live.version == release.version and answering(target, release) == release.version:
            log(f"v{release.version} already serves on {live.color} at {target.url}; nothing to roll out")
        else:
            replacing = live.version if live else None
            if (challenger := target.challenger()) is not None:  # the rollout takes its color: it ends first, said
                target.end_challenge(challenger)
                why = f"a deployment of v{version} takes its color"
                history.append(audit.CHALLENGER_STOPPED, name, challenger.version, actor, **noted, reason=why)
            history.append(audit.DEPLOY_STARTED, name, version, actor, **noted, replacing=replacing)
            gates = GateSettings.from_settings(settings)
            try:
                result = rollout(target, release, gates, keep_old=keep_old, approved=approved, log=log)
            except RolloutError as exc:
                if exc.traffic_restored:
                    history.append(audit.AUTOMATIC_ROLLBACK, name, version, actor, **noted, serving=replacing)
                history.append(audit.DEPLOY_FAILED, name, version, actor, **noted, reason=exc.reason[:1_000])
                raise
            live = result.new
            seconds = round(result.seconds, 2)
            history.append(audit.DEPLOY_SUCCEEDED, name, version, actor, **noted, color=live.color, seconds=seconds)
        previous = registry.alias_version(client, name, registry.PREVIOUS)
        replaced = registry.promote(client, name, release.version)
        if replaced != release.version:
            _record_moves(client, history, name, release.version, replaced, previous, actor, noted)
    return Deployment(release, live, result, replaced)


def version_tags(client, name: str, version: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_model_version(name, version).tags)
    except MlflowException as exc:
        raise DeployError(f"cannot read {name} version {version} from the registry: {exc.message}") from None


def _record_moves(client, history, name: str, version: str, replaced, previous, actor: str, noted: dict) -> None:
    """The alias moves in the history; the chain's head then also on the version, where the file cannot rewrite it."""
    if replaced is not None:
        history.append(audit.ALIAS_MOVED, name, replaced, actor, **noted, alias=registry.PREVIOUS, moved_from=previous)
    record = history.append(
        audit.ALIAS_MOVED, name, version, actor, **noted, alias=registry.PRODUCTION, moved_from=replaced
    )
    if noted.get("cause") == "rollback":
        record = history.append(audit.ROLLBACK, name, version, actor, **noted, replaced=replaced)
    client.set_model_version_tag(name, version, audit.HEAD_TAG, f"{record['seq']}:{record['hash']}")
