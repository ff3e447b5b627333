"""Artifacts in object storage (Azure Blob, S3, a mounted share: any fsspec URL), so no step needs a disk
shared with the others.

With `FIN_BEHAVIOR_ARTIFACT_STORE_URL` set (e.g. `abfs://models@<account>.dfs.core.windows.net/fin-behavior`),
every artifact a step publishes (the processed dataset, each trained model and compatible bundle version and
their CURRENT pointers) is uploaded under that URL, and a step that needs one reads it through the local
artifact directory, downloading what it does not have. The remote copy is the truth; the local directory is
a cache any machine can rebuild.

Readers never see half an artifact: a version's files are uploaded before the pointer that names it, and a
single file goes up under a temporary name and is then moved into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class ArtifactStoreError(RuntimeError):
    """The artifact store cannot be reached or holds nothing where something was expected."""


def artifact_store(url: str, local_root: Path) -> RemoteArtifacts | None:
    """The store at `url`, cached under `local_root`; None when no store is configured (local artifacts only)."""
    return RemoteArtifacts(url, local_root) if url else None


class RemoteArtifacts:
    def __init__(self, url: str, local_root: Path):
        import fsspec

        try:
            self.fs, base = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ArtifactStoreError(
                f"cannot open the artifact store {url!r}: {exc}. For Azure Blob use abfs://<container>/<path> "
                "with AZURE_STORAGE_ACCOUNT_NAME set (credentials from DefaultAzureCredential or "
                "AZURE_STORAGE_CONNECTION_STRING)"
            ) from None
        self.url = url
        self.base = base.rstrip("/")
        self.local_root = local_root

    def remote(self, local: Path) -> str:
        return f"{self.base}/{local.relative_to(self.local_root).as_posix()}"

    def has(self, local: Path) -> bool:
        return self.fs.exists(self.remote(local))

    def push_file(self, local: Path) -> None:
        """Upload one file so that a reader sees the old content or the new one, never part of it."""
        target = self.remote(local)
        partial = f"{target}.partial-{os.getpid()}"
        self.fs.makedirs(target.rpartition("/")[0], exist_ok=True)
        self.fs.put_file(str(local), partial)
        self.fs.mv(partial, target)

    def push_dir(self, local: Path) -> None:
        """Upload a version directory's files (readers find it only once a pointer names it)."""
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.fs.makedirs(self.remote(path.parent), exist_ok=True)
            self.fs.put_file(str(path), self.remote(path))

    def pull_file(self, local: Path) -> bool:
        """Replace the local copy with the remote one; False when the store has none."""
        target = self.remote(local)
        if not self.fs.exists(target):
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.{os.getpid()}.partial")
        self.fs.get_file(target, str(partial))
        os.replace(partial, local)
        return True

    def pull_dir(self, local: Path) -> bool:
        """Download a version directory unless it is already here; False when the store has none."""
        if local.is_dir():
            return True  # versions never change once published
        target = self.remote(local)
        files = self.fs.find(target) if self.fs.isdir(target) else []
        if not files:
            return False
        partial = local.with_name(f".{local.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        for remote_file in files:
            path = partial / remote_file.removeprefix(target).lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote_file, str(path))
        os.replace(partial, local)
        return True
