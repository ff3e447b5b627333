"""Dagster wiring of the last stage: a registered version serves behind the endpoint's stable URL, after
passing its gates on the idle color. A failure leaves the old version serving and the aliases unmoved."""

from typing import Any

import dagster as dg
from pydantic import Field

from fin_behavior.defs.checks import check_result, check_specs
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.executor import on_endpoint_host
from fin_behavior.defs.registry import ACTOR_RUN_TAG, registered_model_version
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.settings import get_settings

DEPLOYMENT_CODE_VERSION = "deployment-v1"
APPROVAL_RUN_TAG = "fin_behavior/approval"  # the history's seq of the approval a deploy run carries out


class DeploymentConfig(SettingsConfig):
    release: str = Field(
        default="candidate",
        description="What to put in service: an alias (candidate, production, previous) or a version number",
    )
    registered_model_name: str | None = setting("registered_model_name")
    keep_old_color: bool | None = setting("keep_old_color")
    auto_approve: bool = Field(
        default=False, description="Let traffic move on a non-local target (the local one needs no approval)"
    )
    skip: bool = Field(default=False, description="Stop after registration: deploy nothing, move no alias")
    challenger: str = Field(
        default="",
        description="shadow or split: start `release` beside the live version as its challenger (its evidence and "
        "gates first; a split also the approval policy) instead of putting it in service (deploy/challengers.py)",
    )
    challenger_share: float = Field(
        default=1.0, gt=0, le=1, description="With `challenger`: the share of the clients' requests it gets"
    )


def _gate_messages(gates: dict) -> dict[str, str]:
    return {f"gate_{name}": outcome.message for name, outcome in gates.items()}


@dg.asset(
    deps=[registered_model_version],
    group_name="deployment",
    code_version=DEPLOYMENT_CODE_VERSION,
    op_tags=on_endpoint_host(),
    output_required=False,  # `skip` materializes nothing
    description="The registered version serving at the endpoint's stable URL: started on the idle color, "
    "gated (ready, smoke, parity with its verified predictions, latency), then given the traffic. "
    "`production` moves to it only then.",
)
def live_deployment(
    context: dg.AssetExecutionContext, config: DeploymentConfig, storage: StorageResource, mlflow: MlflowTracking
):
    if config.skip:
        context.log.info("skip is set: stopping after registration; the endpoint and the aliases are unchanged")
        return
    from fin_behavior.deploy import deployer as deploy
    from fin_behavior.deploy.lock import RolloutInProgressError
    from fin_behavior.deploy.rollout import RolloutError
    from fin_behavior.governance.audit import AuditError
    from fin_behavior.ml import registry_view

    settings = config.settings()
    name, endpoint = settings.registered_model_name, deploy.endpoint_dir(settings, storage.root)
    target = deploy.make_target(settings, storage.root)
    who = f"Dagster run {context.run.run_id} ({context.run.job_name})"
    carries_out = context.run.tags.get(APPROVAL_RUN_TAG)  # set by approval_sensor: which approval this run executes
    cause = f"approval #{carries_out}" if carries_out else ""
    if config.challenger:
        yield _challenger(context, config, settings, target, endpoint, mlflow.uri, who)
        return
    view = registry_view.load(storage.root, mlflow.uri, name)
    try:
        deployment = view and deploy.deploy_unchanged(
            view, settings, config.release, target, endpoint, who=who, log=context.log.info
        )
        if not deployment:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=mlflow.uri)
            deployment = deploy.deploy(
                client,
                settings,
                name,
                config.release,
                target,
                endpoint,
                who=who,
                keep_old=settings.keep_old_color,
                approved=config.auto_approve or target.name == "local",
                actor=context.run.tags.get(ACTOR_RUN_TAG, ""),
                cause=cause,
                log=context.log.info,
            )
            registry_view.refresh(client, storage.root, mlflow.uri, name)
    except RolloutError as exc:
        raise dg.Failure(description=str(exc), metadata=_gate_messages(exc.gates), allow_retries=False) from None
    except (deploy.DeployError, RolloutInProgressError, AuditError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    release, result = deployment.release, deployment.result
    metadata: dict[str, Any] = {
        "url": dg.MetadataValue.url(target.url),
        "target": target.name,
        "model_name": release.model_name,
        "served_version": release.version,
        "color": deployment.serving.color,
        "rolled_out": result is not None,
        "replaced_version": deployment.replaced_production or "none",
        "model_uri": f"models:/{release.model_name}@production",
        "carries_out_approval": cause or "none",
    }
    if result is not None:
        metadata["rollout_seconds"] = round(result.seconds, 2)
        metadata |= _gate_messages(result.gates)
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(f"{release.model_name}-v{release.version}"), metadata=metadata
    )


def _challenger(context, config: DeploymentConfig, settings, target, endpoint, uri: str, who: str):
    """`challenger` set: the release starts beside the live version; what serves and the aliases do not move."""
    from mlflow import MlflowClient

    from fin_behavior.deploy import challengers
    from fin_behavior.deploy.deployer import DeployError
    from fin_behavior.deploy.lock import RolloutInProgressError
    from fin_behavior.deploy.rollout import RolloutError
    from fin_behavior.governance.audit import AuditError

    name = settings.registered_model_name
    try:
        slot = challengers.start(
            MlflowClient(tracking_uri=uri), settings, name, config.release, target, endpoint,
            mode=config.challenger, share=config.challenger_share, who=who,
            actor=context.run.tags.get(ACTOR_RUN_TAG, ""), approved=config.auto_approve or target.name == "local",
            log=context.log.info,
        )  # fmt: skip
    except RolloutError as exc:
        raise dg.Failure(description=str(exc), metadata=_gate_messages(exc.gates), allow_retries=False) from None
    except (DeployError, RolloutInProgressError, AuditError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    live = target.live()
    served = live.version if live else "none"
    return dg.MaterializeResult(
        data_version=dg.DataVersion(f"{name}-v{served}"),  # what serves did not change: neither do its dependents
        metadata={
            "url": dg.MetadataValue.url(target.url),
            "target": target.name,
            "model_name": name,  # the checks read it
            "served_version": served,
            "challenger_version": slot.version,
            "challenger_mode": config.challenger,
            "challenger_share": config.challenger_share,
        },
    )


_CHECKS = {
    "health": (False, "The endpoint URL answers /ready."),
    "smoke": (False, "Known records score through the endpoint URL with the live version."),
    "served_version_is_production": (False, "The version answering at the URL is the registry's `production`."),
    "latency_p95": (False, "p95 of single-row requests through the URL within max_latency_ms."),
}


@dg.multi_asset_check(specs=check_specs(live_deployment, _CHECKS), can_subset=True, op_tags=on_endpoint_host())
def live_deployment_checks(context: dg.AssetCheckExecutionContext, storage: StorageResource, mlflow: MlflowTracking):
    from fin_behavior.deploy import deployer as deploy
    from fin_behavior.ml import registry, registry_view

    settings = get_settings()
    target = deploy.make_target(settings, storage.root)
    materialization = context.instance.get_latest_materialization_event(live_deployment.key)
    name = materialization.asset_materialization.metadata["model_name"].value  # as configured for that run
    view = registry_view.load(storage.root, mlflow.uri, name)  # the registry's answer while it is unchanged
    if view is not None:
        production = view.alias(registry.PRODUCTION)
    else:
        from mlflow import MlflowClient

        production = registry.alias_version(MlflowClient(tracking_uri=mlflow.uri), name, registry.PRODUCTION)
    outcomes = deploy.endpoint_checks(
        target, deploy.live_release(target, settings, name, storage.root), production, settings
    )
    for key in context.selected_asset_check_keys:
        yield check_result(key, outcomes[key.name], blocking=False)
