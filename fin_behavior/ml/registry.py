"""The MLflow Model Registry side of the lifecycle. Aliases carry it: a new version becomes `candidate`;
only a successful deployment moves `production` to it, and the version it replaces becomes `previous`.
So `models:/<name>@production` always names what is serving."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CANDIDATE, PRODUCTION, PREVIOUS = "candidate", "production", "previous"
BUNDLE_TAG = "bundle_sha256"


@dataclass(frozen=True)
class Registration:
    version: str
    created: bool  # False: identical bundle content was already registered as this version


def bundle_digest(model_info: dict[str, Any]) -> str:
    """One hash for the bundle's content: the sha256 of every artifact, as listed in model_info.json."""
    return hashlib.sha256(json.dumps(model_info["sha256"], sort_keys=True).encode()).hexdigest()


def find_version(client, name: str, digest: str) -> str | None:
    found = client.search_model_versions(f"name='{name}' and tags.{BUNDLE_TAG}='{digest}'")
    return str(min((v.version for v in found), key=int)) if found else None


def register_bundle(client, name: str, bundle_dir: Path, tags: dict[str, str]) -> Registration:
    """Register the bundle (logged into the active MLflow run) unless identical content already is; either way
    the version becomes `candidate`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    model_info = json.loads((bundle_dir / "model_info.json").read_text())
    digest = bundle_digest(model_info)
    existing = find_version(client, name, digest)
    if existing is not None:
        client.set_registered_model_alias(name, CANDIDATE, existing)
        return Registration(existing, created=False)
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("register_bundle needs an active MLflow run to hold the bundle's artifacts")
    mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
    try:
        client.create_registered_model(
            name,
            description="HighAmount classifier bundles verified in their "
            "serving environment (fin_behavior compatible_model).",
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, source=f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id, tags=tags | {BUNDLE_TAG: digest}
    ).version
    version = str(version)  # MLflow answers int or str depending on the store
    client.set_registered_model_alias(name, CANDIDATE, version)
    return Registration(version, created=True)


def alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(client, name: str, version: str) -> str | None:
    """After a successful deployment: `production` -> version, the one it replaced -> `previous`."""
    replaced = alias_version(client, name, PRODUCTION)
    if replaced is not None and replaced != version:
        client.set_registered_model_alias(name, PREVIOUS, replaced)
    client.set_registered_model_alias(name, PRODUCTION, version)
    return replaced
