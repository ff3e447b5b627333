"""`fin-behavior verify-env`: the environment report for the current state on disk."""

from __future__ import annotations

import json
from pathlib import Path

from fin_behavior.environments import builder
from fin_behavior.environments.compatible import BUNDLE_DIR, STAGE
from fin_behavior.environments.report import EnvironmentReport, compare, lock_pins
from fin_behavior.environments.spec import EnvironmentSpec, get_spec
from fin_behavior.package_versions import model_package_versions
from fin_behavior.records import ModelInfo, NotApprovedError
from fin_behavior.settings import Settings
from fin_behavior.storage.remote import artifact_store
from fin_behavior.storage.store import VersionStore

LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"


def current_model_info(settings: Settings) -> ModelInfo | None:
    """The manifest of the current (approved) compatible bundle; None when there is none."""
    root = settings.artifacts_dir
    store = VersionStore(root / STAGE, artifact_store(settings.artifact_store_url, root))
    try:
        return ModelInfo.read(store.current() / BUNDLE_DIR)
    except (OSError, ValueError, KeyError, NotApprovedError):
        return None


def serving_resolution(settings: Settings) -> builder.Resolution:
    """The serving spec as it resolves today (asks the package index)."""
    return builder.resolve_spec(get_spec(settings.serving_environment, settings.serving_environments_file))


def environment_report(
    settings: Settings, compatible_info: ModelInfo | None, serving: builder.Resolution | None = None
) -> EnvironmentReport:
    serving = serving or serving_resolution(settings)
    # The registered production version's model_info joins this comparison once a registry holds one.
    return compare(
        lock_pins(LOCK_FILE), model_package_versions(), compatible_info, None, serving.versions(), serving.fingerprint
    )


def cached_resolution(spec: EnvironmentSpec, cache_file: Path, max_age_seconds: float) -> builder.Resolution:
    """`builder.resolve_spec`, asked again only when the spec changed or the last answer is older than
    `max_age_seconds`, so one run observes, builds and checks against the same resolution, and sensor ticks
    stay cheap (resolving asks the package index and takes seconds)."""
    import time

    key = f"{spec.name}:{spec.digest}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if entry and time.time() - entry["at"] < max_age_seconds and Path(entry["python"]).exists():
        return builder.Resolution(entry["python"], entry["python_version"], tuple(entry["pins"]))
    resolution = builder.resolve_spec(spec)
    cache[key] = {
        "at": time.time(),
        "python": resolution.python,
        "python_version": resolution.python_version,
        "pins": list(resolution.pins),
    }
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(cache))
    return resolution


def training_drift(recorded: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Packages whose installed version differs from what a model recorded: name -> (recorded, installed)."""
    from fin_behavior.package_versions import installed_versions

    installed = installed_versions(tuple(name for name in recorded if name != "python"))
    return {
        name: (was, installed.get(name, "not installed"))
        for name, was in recorded.items()
        if installed.get(name, "not installed") != was
    }
