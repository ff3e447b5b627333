"""Installed package versions. Light: imported inside serving environments too."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

# The packages that change what a trained model is. One list for the training_environment source, the
# environment drift sensor, the versions a training record keeps and the MLflow tags: a package outside it
# (dagster, mlflow) can be upgraded without a retrain.
MODEL_PACKAGES = ("scikit-learn", "numpy", "pandas", "joblib", "scipy")


def model_package_versions() -> dict[str, str]:
    """Python's version and each model package's ("not installed" when missing) where this runs."""
    return {name: "not installed" for name in MODEL_PACKAGES} | installed_versions(MODEL_PACKAGES)


def installed_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Python's version and each installed package's; packages that are not installed are left out."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
