"""Installed package versions. Light: imported inside serving environments too."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def installed_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Python's version and each installed package's; packages that are not installed are left out."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
