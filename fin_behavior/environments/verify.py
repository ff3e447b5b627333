"""`fin-behavior verify-env`: the environment report for the current state on disk."""

from __future__ import annotations

import json
from pathlib import Path

from fin_behavior.environments import builder
from fin_behavior.environments.compatible import MODEL_INFO
from fin_behavior.environments.report import EnvironmentReport, compare, lock_pins, training_versions
from fin_behavior.environments.spec import get_spec
from fin_behavior.settings import Settings

LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"


def current_model_info(settings: Settings) -> dict | None:
    root = settings.artifacts_dir / "compatible_model"
    try:
        version = (root / "CURRENT").read_text().strip()
        return json.loads((root / version / MODEL_INFO).read_text())
    except (OSError, ValueError):
        return None


def serving_resolution(settings: Settings) -> tuple[dict[str, str], str]:
    """The serving spec's resolved versions (plus python) and fingerprint, as it resolves today."""
    spec = get_spec(settings.serving_environment, settings.serving_environments_file)
    python = builder.find_python(spec.python)
    pins = builder.resolve(spec, python)
    version = builder.python_version(python) or spec.python
    resolved = {pin.split("==")[0].lower(): pin.split("==")[1] for pin in pins} | {"python": version}
    return resolved, builder.fingerprint(version, pins)


def environment_report(settings: Settings, compatible_info: dict | None) -> EnvironmentReport:
    serving, fingerprint = serving_resolution(settings)
    # The registered production version's model_info joins this comparison once a registry holds one.
    return compare(lock_pins(LOCK_FILE), training_versions(), compatible_info, None, serving, fingerprint)


def cached_serving_resolution(settings: Settings, cache_file: Path, max_age_seconds: float) -> tuple[dict, str]:
    """`serving_resolution`, re-resolved only when the spec changed or the last answer is older than
    `max_age_seconds` (resolving asks the package index and takes seconds)."""
    import time

    spec = get_spec(settings.serving_environment, settings.serving_environments_file)
    key = f"{spec.name}:{spec.digest}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if entry and time.time() - entry["at"] < max_age_seconds:
        return entry["resolved"], entry["fingerprint"]
    resolved, fingerprint = serving_resolution(settings)
    cache[key] = {"at": time.time(), "resolved": resolved, "fingerprint": fingerprint}
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(cache))
    return resolved, fingerprint


def training_drift(recorded: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Packages whose installed version differs from what a model recorded: name -> (recorded, installed)."""
    from fin_behavior.environments.versions import installed_versions

    installed = installed_versions(tuple(name for name in recorded if name != "python"))
    return {
        name: (was, installed.get(name, "not installed"))
        for name, was in recorded.items()
        if installed.get(name, "not installed") != was
    }
