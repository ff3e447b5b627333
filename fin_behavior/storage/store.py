"""The versions of one stage's artifact, each published once with its evidence and never changed after.

`CURRENT` names the last *approved* version (every blocking check passed): what every later stage, job,
sensor, CLI command and target uses. `LATEST` names the last attempt, approved or not, so a failed attempt
stays inspectable and messages can say what happened to it. Readers never see a half-written version: it is
written in a staging directory and moved into place whole. With a remote artifact store, published versions
and the pointers are uploaded too (versions before pointers), and readers follow the remote pointers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from fin_behavior.records import EVIDENCE_FILE, Evidence, NotApprovedError

if TYPE_CHECKING:
    from fin_behavior.storage.remote import RemoteArtifacts


class NoApprovedVersionError(NotApprovedError):
    """The stage has never published a version that passed its blocking checks."""


class VersionStore:
    def __init__(self, root: Path, remote: RemoteArtifacts | None = None):
        self.root = root
        self.remote = remote

    @property
    def stage(self) -> str:
        return self.root.name

    @property
    def pointer(self) -> Path:
        return self.root / "CURRENT"

    @property
    def latest_pointer(self) -> Path:
        return self.root / "LATEST"

    def staging(self, version: str) -> Path:
        """A fresh directory to write a version into; `publish` moves it into place."""
        path = self.root / f".staging-{version}-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def publish(self, staging: Path, evidence: Evidence) -> Path:
        """Move `staging` into place as `evidence.version` with its evidence; CURRENT follows only when the
        evidence approves it. A version already published stays as it is (published versions never change)."""
        version = evidence.version
        final = self.root / version
        evidence.write(staging)
        if self.published(version):
            shutil.rmtree(staging, ignore_errors=True)
        else:
            os.replace(staging, final)
            if self.remote is not None:
                self.remote.push_dir(final)
        self.reuse(version)
        return final

    def reuse(self, version: str) -> Evidence:
        """Take an already published version again (same inputs as before): it is the latest attempt, and
        current if its evidence approves it. Returns that evidence."""
        evidence = self.evidence(version)
        self._point(self.latest_pointer, version)
        if evidence.approved:
            self._point(self.pointer, version)
        return evidence

    def _point(self, pointer: Path, version: str) -> None:
        tmp = self.root / f".{pointer.name}.{os.getpid()}.tmp"
        tmp.write_text(version)
        os.replace(tmp, pointer)
        if self.remote is not None:
            if not self.remote.has(self.root / version):  # published here before the store was configured
                self.remote.push_dir(self.root / version)
            self.remote.push_file(pointer)  # after the version's files: readers never follow it early

    def published(self, version: str) -> bool:
        """The version is in place with its evidence (fetched from the store when it is only there)."""
        if self.remote is not None:
            self.remote.pull_dir(self.root / version)
        return (self.root / version / EVIDENCE_FILE).is_file()

    def path(self, version: str) -> Path:
        if not self.published(version):
            raise FileNotFoundError(f"{self.stage} version {version} has not been published under {self.root}")
        return self.root / version

    def evidence(self, version: str) -> Evidence:
        return Evidence.read(self.path(version))

    def approved(self, version: str) -> Path:
        """The version's folder, refused unless its evidence approves it."""
        self.evidence(version).require(
            f"Fix what failed and materialize {self.stage} again; the last approved version stays current."
        )
        return self.root / version

    def _read_pointer(self, pointer: Path) -> str | None:
        if self.remote is not None:
            self.remote.pull_file(pointer)
        try:
            return pointer.read_text().strip()
        except FileNotFoundError:
            return None

    def approved_version(self) -> str | None:
        """The CURRENT pointer, None before any version was approved."""
        return self._read_pointer(self.pointer)

    def current_version(self) -> str:
        version = self.approved_version()
        if version is None:
            latest = self.latest_version()
            failed = f"; the latest attempt: {self.evidence(latest).summary()}" if latest else ""
            raise NoApprovedVersionError(f"no {self.stage} version has passed its blocking checks yet{failed}")
        return version

    def current(self) -> Path:
        """The last approved version's folder (its evidence is read again: a pointer is not proof)."""
        return self.approved(self.current_version())

    def latest_version(self) -> str | None:
        return self._read_pointer(self.latest_pointer)

    def attempt_note(self) -> str | None:
        """Why the latest attempt is not current, when it is not: for logs and UI metadata."""
        latest = self.latest_version()
        current = self.approved_version()
        if latest is None or latest == current:
            return None
        return f"the latest attempt is not used: {self.evidence(latest).summary()}; current stays {current or 'none'}"
