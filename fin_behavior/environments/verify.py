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
