"""The MLflow Model Registry side of the lifecycle. Aliases carry it: a new version becomes `candidate`;
only a successful deployment moves `production` to it, and the version it replaces becomes `previous`.
So `models:/<name>@production` always names what is serving.

The registry only holds approved versions, each tagged with the evidence of every stage behind it (dataset,
trained model, compatible bundle). Whoever takes a version from the registry asks `require_evidence` first, so
a version without passing evidence (registered by hand, or before evidence was recorded) never serves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fin_behavior.records import Evidence, ModelInfo, NotApprovedError

CANDIDATE, PRODUCTION, PREVIOUS = "candidate", "production", "previous"
BUNDLE_TAG = "bundle_sha256"
EVIDENCE_STAGES = ("processed_dataset", "trained_model", "compatible_model")  # behind a version of the platform's model
APPROVED_TAG, STAGES_TAG = "evidence.approved", "evidence.stages"
PROMOTED_AT_TAG = "promoted_at"  # when `production` last moved to the version


@dataclass(frozen=True)
class Registration:
    version: str
    created: bool  # False: identical bundle content was already registered as this version


def evidence_tags(evidences: list[Evidence], required: tuple[str, ...] = EVIDENCE_STAGES) -> dict[str, str]:
    """The evidence of every stage behind a version, as registry tags; refuses any that is not approved."""
    stages = {e.stage for e in evidences}
    missing = [stage for stage in required if stage not in stages]
    if missing or not stages:
        raise NotApprovedError(
            f"no evidence from {', '.join(missing) or 'any stage'}: nothing is registered without it"
        )
    tags = {APPROVED_TAG: "true", STAGES_TAG: ",".join(e.stage for e in evidences)}
    for evidence in evidences:
        evidence.require("Nothing was registered.")
        tags[f"evidence.{evidence.stage}"] = evidence.version
        for v in evidence.verdicts:
            if v.blocking:
                tags[f"gate.{evidence.stage}.{v.check}"] = f"passed: {v.actual} vs {v.threshold}"
    return tags


def require_evidence(client, name: str, version: str, required: tuple[str, ...] = EVIDENCE_STAGES) -> dict[str, str]:
    """The version's tags, refused unless they carry passing evidence of every stage behind it: the stages it
    names, and at least `required` (the platform's own model: dataset, trained model, bundle)."""
    return check_evidence(name, version, client.get_model_version(name, version).tags, required)


def check_evidence(
    name: str, version: str, tags: dict[str, str], required: tuple[str, ...] = EVIDENCE_STAGES
) -> dict[str, str]:
    """`require_evidence` on tags already read (registry_view.py keeps them)."""
    failed = [f"{k[5:]} ({v})" for k, v in tags.items() if k.startswith("gate.") and not v.startswith("passed")]
    named = [s for s in tags.get(STAGES_TAG, "").split(",") if s]
    missing = [stage for stage in dict.fromkeys([*required, *named]) if f"evidence.{stage}" not in tags]
    missing += [] if named or required else ["any stage"]
    if tags.get(APPROVED_TAG) != "true" or failed or missing:
        why = (
            f"its evidence shows failed checks: {'; '.join(failed)}"
            if failed
            else f"it carries no evidence of passing the blocking checks of {', '.join(missing) or 'its stages'}"
            " (registered by hand, or before evidence was recorded)"
        )
        raise NotApprovedError(
            f"{name} version {version} will not be deployed: {why}. Deploy an approved version (an alias or "
            "another number), or register a new one through full_pipeline or rebuild_compatible."
        )
    return tags


def find_version(client, name: str, digest: str) -> str | None:
    found = client.search_model_versions(f"name='{name}' and tags.{BUNDLE_TAG}='{digest}'")
    return str(min((v.version for v in found), key=int)) if found else None


def already_registered(client, name: str, digest: str, tags: dict[str, str]) -> Registration | None:
    """The version holding exactly this bundle, when it is `candidate` and already carries this evidence (the
    nothing-changed path: no MLflow run, no write); None when `register_bundle` has work to do."""
    existing = find_version(client, name, digest)
    if existing is None or alias_version(client, name, CANDIDATE) != existing:
        return None
    held = client.get_model_version(name, existing).tags
    return Registration(existing, created=False) if carries(held, tags) else None


def carries(held: dict[str, str], tags: dict[str, str]) -> bool:
    """A version's tags already hold this bundle's evidence, verdict for verdict."""
    return all(held.get(key) == value for key, value in tags.items() if key.startswith(("evidence.", "gate.")))


def register_bundle(client, name: str, bundle_dir: Path, tags: dict[str, str]) -> Registration:
    """Register the bundle (logged into the active MLflow run) unless identical content already is; either way
    the version becomes `candidate`. `tags` must carry the evidence (see `evidence_tags`)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if tags.get(APPROVED_TAG) != "true":
        raise NotApprovedError(f"refusing to register {bundle_dir} without passing evidence in its tags")
    digest = ModelInfo.read(bundle_dir).digest
    existing = find_version(client, name, digest)
    if existing is not None:
        for key, value in tags.items():  # the same bytes, judged again: the version carries this evidence too
            if key.startswith(("evidence.", "gate.")):
                client.set_model_version_tag(name, existing, key, value)
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
    if replaced == version:
        return replaced  # nothing moves: no write
    if replaced is not None:
        client.set_registered_model_alias(name, PREVIOUS, replaced)
    client.set_registered_model_alias(name, PRODUCTION, version)
    # MLflow keeps no time for an alias; the inventory (`fin-behavior models`) says since when a version serves
    client.set_model_version_tag(name, version, PROMOTED_AT_TAG, datetime.now(UTC).isoformat(timespec="seconds"))
    return replaced
