"""Artifacts in object storage: two machines that share no disk, only the store (a file:// URL here; abfs://
on Azure Blob goes through the same fsspec calls)."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from fin_behavior.data.processing import DATASET_FILE
from fin_behavior.defs.dataset import processed_dataset, raw_transactions
from fin_behavior.defs.resources import StorageResource
from fin_behavior.storage.remote import ArtifactStoreError, RemoteArtifacts
from fin_behavior.storage.store import VersionStore
from fin_behavior_tests.helpers import dagster_instance, evidence


@pytest.fixture
def store_url(tmp_path):
    return (tmp_path / "object-store").as_uri()


def _machine(tmp_path, name: str, url: str) -> VersionStore:
    root = tmp_path / name / "artifacts"
    return VersionStore(root / "trained_model", RemoteArtifacts(url, root))


def _publish(store: VersionStore, version: str, files: dict[str, bytes], passed: bool = True) -> None:
    staging = store.staging(version)
    for name, content in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(content)
    store.publish(staging, evidence("trained_model", version, passed))


def test_a_version_published_on_one_machine_is_read_on_another(tmp_path, store_url):
    writer, reader = _machine(tmp_path, "a", store_url), _machine(tmp_path, "b", store_url)
    _publish(writer, "v1", {"model.joblib": b"one", "plots/roc.png": b"png"})
    assert reader.current_version() == "v1"
    assert (reader.current() / "model.joblib").read_bytes() == b"one"
    assert (reader.current() / "plots" / "roc.png").read_bytes() == b"png"

    _publish(writer, "v2", {"model.joblib": b"two"})
    assert (reader.current() / "model.joblib").read_bytes() == b"two"  # follows the store's pointer
    _publish(writer, "v3", {"model.joblib": b"three"}, passed=False)
    assert reader.current_version() == "v2" and reader.latest_version() == "v3"  # with the evidence, remotely
    assert not reader.evidence("v3").approved
    writer.reuse("v1")  # e.g. a compatible bundle reused
    assert reader.current_version() == "v1"
    assert reader.published("v2")  # found in the store


def test_pointer_never_names_a_version_whose_upload_failed(tmp_path, store_url, monkeypatch):
    writer, reader = _machine(tmp_path, "a", store_url), _machine(tmp_path, "b", store_url)
    _publish(writer, "v1", {"model.joblib": b"one"})
    real_put = writer.remote.fs.put_file
    calls = []

    def put_failing_on_second(lpath, rpath, **kwargs):
        calls.append(rpath)
        if len(calls) == 2:
            raise OSError("connection reset by the store")
        return real_put(lpath, rpath, **kwargs)

    monkeypatch.setattr(writer.remote.fs, "put_file", put_failing_on_second)
    with pytest.raises(OSError, match="connection reset"):
        _publish(writer, "v2", {"a.bin": b"a", "model.joblib": b"two"})
    assert reader.current_version() == "v1"
    assert (reader.current() / "model.joblib").read_bytes() == b"one"


def test_a_store_that_cannot_be_opened_says_what_to_set(tmp_path, monkeypatch):
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ArtifactStoreError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        RemoteArtifacts("abfs://models/fin-behavior", tmp_path)
    with pytest.raises(ArtifactStoreError, match="cannot open the artifact store 'nosuch://x'"):
        RemoteArtifacts("nosuch://x", tmp_path)


def test_a_missing_artifact_is_a_clear_error(tmp_path, store_url):
    storage = StorageResource(var_dir=str(tmp_path / "b"), artifact_store_url=store_url)
    with pytest.raises(FileNotFoundError, match=r"quarantine/r1\.csv is not in the artifact store"):
        storage.fetch_file(storage.quarantine_path("r1"))


def test_steps_on_machines_that_share_only_the_store(tmp_path, store_url, isolated_settings):
    """processed_dataset on one machine, then on another with an empty disk: the same version, found in the
    store with its evidence, not judged again."""
    raw = StorageResource(var_dir=str(tmp_path / "a")).ensure_raw_data()
    machines = {
        name: StorageResource(var_dir=str(tmp_path / name), raw_data_path=str(raw), artifact_store_url=store_url)
        for name in ("a", "b")
    }
    with dagster_instance() as instance:
        built = dg.materialize(
            [raw_transactions, processed_dataset], instance=instance, resources={"storage": machines["a"]}
        )
        assert built.success
        checked = dg.materialize(
            [raw_transactions, processed_dataset], instance=instance, resources={"storage": machines["b"]}
        )
    assert checked.success and len(checked.get_asset_check_evaluations()) == 5
    assert all(e.passed for e in checked.get_asset_check_evaluations())
    stores = {name: machine.versions("processed_dataset") for name, machine in machines.items()}
    assert stores["a"].current_version() == stores["b"].current_version()
    local_a, local_b = (stores[name].current() / DATASET_FILE for name in ("a", "b"))
    assert local_b.exists() and pd.read_parquet(local_b).equals(pd.read_parquet(local_a))
