"""The seeds' verify_environment, as a comparison table: project pins, the installed training environment,
the versions recorded in the current compatible model (and registered production version), and the
serving environment spec. Every mismatch comes with what to run to fix it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from fin_behavior.package_versions import MODEL_PACKAGES
from fin_behavior.records import ModelInfo

FIX_INSTALL = "make setup  (re-installs the training environment from requirements.lock)"
FIX_REBUILD = (
    "rematerialize compatible_model and downstream: DAGSTER_HOME=$PWD/dagster_home .venv/bin/dagster asset "
    "materialize -m fin_behavior.definitions --select 'compatible_model*'"
)
FIX_RETRAIN = (
    "retrain: DAGSTER_HOME=$PWD/dagster_home .venv/bin/dagster asset materialize -m "
    "fin_behavior.definitions --select 'trained_model*'"
)


def versions_fingerprint(versions: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:16]


def lock_pins(lock_file: Path) -> dict[str, str]:
    pins = {}
    for line in lock_file.read_text().splitlines() if lock_file.exists() else []:
        if "==" in line and not line.lstrip().startswith("#"):
            name, pinned = line.split("==", 1)
            pins[name.strip().lower()] = pinned.split(";")[0].strip()
    return pins


@dataclass
class EnvironmentReport:
    rows: list[tuple[str, ...]] = field(
        default_factory=list
    )  # package, pin, installed, compatible, production, serving
    problems: list[tuple[str, str]] = field(default_factory=list)  # (what is wrong, what to run)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        header = ("package", "project pin", "training env", "compatible model", "production", "serving spec")
        widths = [max(len(str(r[i])) for r in [header, *self.rows]) for i in range(len(header))]
        lines = [
            "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *self.rows]
        ]
        if self.ok:
            lines.append("\nOK: the serving bundle was built for exactly these environments.")
        for problem, fix in self.problems:
            lines.append(f"\nMISMATCH: {problem}\n  fix: {fix}")
        return "\n".join(lines)


def compare(
    pins: dict[str, str],
    installed: dict[str, str],
    compatible_info: ModelInfo | None,
    production_info: ModelInfo | None,
    serving_spec: dict[str, str],
    serving_fingerprint: str,
) -> EnvironmentReport:
    """Compare what each place says; `*_info` are bundle manifests (None when there is none yet)."""
    report = EnvironmentReport()
    served = compatible_info.package_versions if compatible_info else {}
    trained_with = compatible_info.training_package_versions if compatible_info else {}
    production = production_info.package_versions if production_info else {}
    for name in ("python", *MODEL_PACKAGES, "onnxruntime"):
        pin = "-" if name == "python" else pins.get(name, "-")
        recorded = served.get(name, "-")
        if name in trained_with:
            recorded = f"{recorded} (trained {trained_with[name]})"
        report.rows.append(
            (name, pin, installed.get(name, "-"), recorded, production.get(name, "-"), serving_spec.get(name, "-"))
        )
        if name != "python" and pin != "-" and installed.get(name) != pin:
            report.problems.append(
                (f"{name} {installed.get(name)} is installed but the project pins {pin}", FIX_INSTALL)
            )
        if trained_with.get(name) and trained_with[name] != installed.get(name):
            report.problems.append(
                (
                    f"the compatible model was trained with {name} {trained_with[name]}, the training environment "
                    f"now has {installed.get(name)}",
                    FIX_RETRAIN,
                )
            )
    if compatible_info is None:
        report.problems.append(("no compatible model has been built yet", FIX_REBUILD))
    elif compatible_info.environment_fingerprint != serving_fingerprint:
        report.problems.append(
            (
                f"the compatible model was built in serving environment {compatible_info.serving_environment} "
                f"{compatible_info.environment_fingerprint}, the spec now resolves to {serving_fingerprint}",
                FIX_REBUILD,
            )
        )
    return report
