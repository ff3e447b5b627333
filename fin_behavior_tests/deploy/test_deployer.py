"""Taking a version from the registry: its evidence first, then the bundle verified as a whole against the
digest the registry recorded, a cached copy no less than a download (real MLflow SQLite registry)."""

from __future__ import annotations

import mlflow
import pytest

from fin_behavior.deploy.deployer import DeployError, fetch_release
from fin_behavior.ml import registry
from fin_behavior_tests.helpers import evidence, local_registry


@pytest.fixture
def registered(bundle, tmp_path):
    client = local_registry(tmp_path, "deployer-test")
    tags = registry.evidence_tags([evidence(stage, "v1") for stage in registry.EVIDENCE_STAGES])
    with mlflow.start_run():
        version = registry.register_bundle(client, "m", bundle[0], tags).version
    return client, version, tmp_path / "releases"


def test_a_cached_release_is_verified_again_and_replaced_when_it_was_changed(registered):
    client, version, releases = registered
    first = fetch_release(client, "m", version, releases)
    onnx = first.bundle / "model.onnx"
    registered_bytes = onnx.read_bytes()
    onnx.write_bytes(registered_bytes[:-10])  # the cached copy is damaged on disk
    again = fetch_release(client, "m", version, releases)
    assert again.bundle == first.bundle and again.info.digest == first.info.digest
    assert onnx.read_bytes() == registered_bytes  # downloaded again, not served damaged


def test_a_manifest_other_than_the_registered_one_is_refused(registered):
    client, version, releases = registered
    client.set_model_version_tag("m", version, registry.BUNDLE_TAG, "0" * 64)
    with pytest.raises(DeployError, match=f"m version {version} cannot be served: .*does not match the registered"):
        fetch_release(client, "m", version, releases)


def test_a_version_without_evidence_is_refused_before_anything_is_downloaded(registered):
    client, version, releases = registered
    client.delete_model_version_tag("m", version, registry.APPROVED_TAG)
    with pytest.raises(DeployError, match="will not be deployed"):
        fetch_release(client, "m", version, releases)
    assert not releases.exists()
