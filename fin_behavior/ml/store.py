"""A directory of model versions with an atomically switched CURRENT pointer: readers never see a half-written
model, and a failed training run leaves the previous one in place. With a remote artifact store, published
versions and the pointer are uploaded too, and readers follow the remote pointer (see remote.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fin_behavior.ml.remote import RemoteArtifacts

MODEL_FILE = "model.joblib"
EVALUATION_FILE = "evaluation.json"
HOLDOUT_FILE = "holdout_ids.parquet"


class VersionStore:
    def __init__(self, root: Path, remote: RemoteArtifacts | None = None):
        self.root = root
        self.remote = remote

    @property
    def pointer(self) -> Path:
        return self.root / "CURRENT"

    def staging(self, version: str) -> Path:
        """A fresh directory to write a version into; `publish` moves it into place."""
        path = self.root / f".staging-{version}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def publish(self, staging: Path, version: str) -> Path:
        final = self.root / version
        if final.exists():  # same inputs trained again: replace the old copy
            retired = self.root / f".retired-{version}-{os.getpid()}"
            os.replace(final, retired)
            shutil.rmtree(retired)
        os.replace(staging, final)
        if self.remote is not None:
            self.remote.push_dir(final)  # replaces a copy of the same version the store may hold
        return self.activate(version)

    def activate(self, version: str) -> Path:
        """Point CURRENT at an already published version."""
        tmp = self.root / f".CURRENT.{os.getpid()}.tmp"
        tmp.write_text(version)
        os.replace(tmp, self.pointer)
        if self.remote is not None:
            if not self.remote.has(self.root / version):  # published here before the store was configured
                self.remote.push_dir(self.root / version)
            self.remote.push_file(self.pointer)  # after the version's files: readers never follow it early
        return self.root / version

    def published(self, version: str, *required: str) -> bool:
        if self.remote is not None:
            self.remote.pull_dir(self.root / version)
        return all((self.root / version / name).is_file() for name in required)

    def current_version(self) -> str:
        if self.remote is not None:
            self.remote.pull_file(self.pointer)
        try:
            return self.pointer.read_text().strip()
        except FileNotFoundError:
            raise FileNotFoundError(f"no model has been published under {self.root} yet") from None

    def current(self) -> Path:
        version = self.current_version()
        if self.remote is not None:
            self.remote.pull_dir(self.root / version)
        return self.root / version


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically: a reader sees the old content or the new, never half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(partial, path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
