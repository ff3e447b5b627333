"""Serving environments as declared in configuration: name, Python, pinned packages, scoring runtime."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SPEC_FILE = Path(__file__).with_name("serving_environments.toml")
RUNTIMES = ("onnx", "sklearn", "pyfunc")


class EnvironmentSpecError(ValueError):
    """The environment configuration is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    python: str
    runtime: str
    packages: tuple[str, ...]
    description: str = ""

    @property
    def digest(self) -> str:
        payload = json.dumps([self.python, self.runtime, sorted(self.packages)])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_specs(path: Path = DEFAULT_SPEC_FILE) -> dict[str, EnvironmentSpec]:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EnvironmentSpecError(f"cannot read serving environments from {path}: {exc}") from None
    specs = {}
    for name, table in raw.items():
        missing = [key for key in ("python", "runtime", "packages") if key not in table]
        if missing:
            raise EnvironmentSpecError(f"{path}: environment [{name}] lacks {', '.join(missing)}")
        if table["runtime"] not in RUNTIMES:
            raise EnvironmentSpecError(f"{path}: [{name}] runtime must be one of {RUNTIMES}, got {table['runtime']!r}")
        specs[name] = EnvironmentSpec(
            name=name,
            python=str(table["python"]),
            runtime=table["runtime"],
            packages=tuple(table["packages"]),
            description=table.get("description", ""),
        )
    return specs


def get_spec(name: str, path: Path = DEFAULT_SPEC_FILE) -> EnvironmentSpec:
    specs = load_specs(path)
    if name not in specs:
        raise EnvironmentSpecError(
            f"no serving environment named {name!r} in {path}; defined: {', '.join(specs)}. "
            "Set FIN_BEHAVIOR_SERVING_ENVIRONMENT to one of them."
        )
    return specs[name]
