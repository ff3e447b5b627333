"""Dagster wiring of the serving image: a registered version as one container image, gated like a deployment
before it is recorded or pushed. Its own job (`build_image`), as it needs a Docker engine; the Kubernetes target
builds and pushes a missing image itself when it deploys. The domain code is fin_behavior/deploy/image.py."""

import dagster as dg
from pydantic import Field

from fin_behavior.defs.checks import check_result, check_specs
from fin_behavior.defs.config import SettingsConfig, setting
from fin_behavior.defs.registry import registered_model_version
from fin_behavior.defs.resources import MlflowTracking, StorageResource

STAGE = "serving_image"
CHECKS = {
    "smoke": (True, "Known records score in the running container, with the right version."),
    "parity": (True, "The container answers what the bundle was verified to answer."),
    "latency": (True, "p95 of single-row requests to the container within max_latency_ms."),
}


class ImageConfig(SettingsConfig):
    release: str = Field(
        default="candidate", description="The version to build: an alias (candidate, production) or a number"
    )
    registered_model_name: str | None = setting("registered_model_name")
    image_registry: str | None = setting("image_registry")


@dg.asset(
    deps=[registered_model_version],
    group_name="image",
    check_specs=check_specs(STAGE, CHECKS),
    description="The registered version as a container image: the verified bundle, the serving code and the "
    "serving environment at its verified pins on a Debian base, non-root, with a HEALTHCHECK; started read-only "
    "and gated (smoke, parity, latency) before it is recorded and, when IMAGE_REGISTRY is set, pushed. Its data "
    "version is the image id.",
)
def serving_image(
    context: dg.AssetExecutionContext, config: ImageConfig, storage: StorageResource, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    from mlflow import MlflowClient

    from fin_behavior.deploy import deployer, image

    client = MlflowClient(tracking_uri=mlflow.uri)
    try:
        built, outcomes = deployer.build_image(
            client, config.settings(), config.release, push=True, var_dir=storage.root, log=context.log.info
        )
    except (deployer.DeployError, image.ImageError) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    return dg.MaterializeResult(
        data_version=dg.DataVersion(built.image_id),
        metadata={
            "tag": built.tag,
            "image_id": built.image_id,
            "reference": built.reference or "not pushed (IMAGE_REGISTRY is empty)",
            "size_mb": round(built.size_bytes / 2**20, 1),
            "build_seconds": built.seconds,
            "context_digest": built.context_digest,
            "base_image_id": built.base_image_id,
        },
        check_results=[
            check_result(dg.AssetCheckKey(dg.AssetKey(STAGE), name), outcome, blocking=CHECKS[name][0])
            for name, outcome in outcomes.items()
        ],
    )


build_image = dg.define_asset_job(
    "build_image",
    selection=dg.AssetSelection.assets(serving_image),
    description="Build, gate and (with IMAGE_REGISTRY) push the serving image of a registered version: the "
    "`candidate` by default; set ops.serving_image.config.release to an alias or a version number.",
)
