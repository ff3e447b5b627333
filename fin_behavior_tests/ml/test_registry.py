"""Registry lifecycle against a real MLflow SQLite store."""

from __future__ import annotations

import hashlib

import mlflow
import pytest
from mlflow import MlflowClient

from fin_behavior.ml import registry
from fin_behavior.records import FeatureSpec, ModelInfo, NotApprovedError
from fin_behavior_tests.helpers import evidence

APPROVED = [evidence(stage, "v1") for stage in registry.EVIDENCE_STAGES]


@pytest.fixture
def client(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    # An explicit artifact location: MLflow's default is ./mlruns in whatever directory pytest runs from.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("registry-test", (tmp_path / "art").as_uri()))
    return MlflowClient(tracking_uri=uri)


def _bundle(tmp_path, name: str, content: bytes):
    bundle = tmp_path / name
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(content)
    sha = {"model.onnx": hashlib.sha256(content).hexdigest()}
    ModelInfo("e", "onnx", "f", {}, {}, False, [FeatureSpec("age", "float")], "y", 0.5, "t", "d", "now", sha).write(
        bundle
    )
    return bundle


def _register(client, bundle, evidences=APPROVED):
    with mlflow.start_run():
        return registry.register_bundle(client, "m", bundle, registry.evidence_tags(evidences) | {"data_version": "d"})


def test_identical_content_is_registered_once(client, tmp_path):
    first = _register(client, _bundle(tmp_path, "a", b"model-1"))
    again = _register(client, _bundle(tmp_path, "b", b"model-1"))  # same bytes, other folder
    other = _register(client, _bundle(tmp_path, "c", b"model-2"))
    assert first.created and not again.created and other.created
    assert again.version == first.version and other.version != first.version
    assert [str(v.version) for v in client.search_model_versions("name='m'")] == sorted(
        [first.version, other.version], key=int, reverse=True
    )
    assert client.get_model_version("m", first.version).tags["data_version"] == "d"


def test_aliases_carry_the_lifecycle(client, tmp_path):
    v1 = _register(client, _bundle(tmp_path, "a", b"model-1")).version
    assert registry.alias_version(client, "m", registry.CANDIDATE) == v1
    assert registry.alias_version(client, "m", registry.PRODUCTION) is None  # nothing deployed yet

    assert registry.promote(client, "m", v1) is None
    v2 = _register(client, _bundle(tmp_path, "b", b"model-2")).version
    assert registry.alias_version(client, "m", registry.CANDIDATE) == v2
    assert registry.alias_version(client, "m", registry.PRODUCTION) == v1  # until v2 is deployed

    assert registry.promote(client, "m", v2) == v1
    assert registry.alias_version(client, "m", registry.PRODUCTION) == v2
    assert registry.alias_version(client, "m", registry.PREVIOUS) == v1
    served = mlflow.artifacts.download_artifacts("models:/m@production", dst_path=str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "model.onnx").read_bytes() == b"model-2" and served


def test_registering_needs_a_run_for_the_artifacts(client, tmp_path):
    with pytest.raises(RuntimeError, match="needs an active MLflow run"):
        registry.register_bundle(client, "m", _bundle(tmp_path, "a", b"x"), registry.evidence_tags(APPROVED))


def test_only_versions_with_passing_evidence_get_in_and_get_out(client, tmp_path):
    failed = [*APPROVED[:2], evidence("compatible_model", "v1", passed=False)]
    with pytest.raises(NotApprovedError, match="compatible_model v1 failed gate"):
        _register(client, _bundle(tmp_path, "a", b"model-1"), failed)
    with pytest.raises(NotApprovedError, match="no evidence from trained_model"):
        _register(client, _bundle(tmp_path, "b", b"model-1"), [APPROVED[0], APPROVED[2]])
    with mlflow.start_run(), pytest.raises(NotApprovedError, match="without passing evidence"):
        registry.register_bundle(client, "m", _bundle(tmp_path, "c", b"model-1"), {"data_version": "d"})
    assert client.search_model_versions("name='m'") == []

    good = _register(client, _bundle(tmp_path, "d", b"model-1")).version
    tags = registry.require_evidence(client, "m", good)
    assert tags["gate.trained_model.gate"].startswith("passed") and tags["evidence.compatible_model"] == "v1"

    # A version that reached the registry another way (by hand, or before evidence existed) is refused.
    client.set_model_version_tag("m", good, "gate.trained_model.gate", "FAILED: edited")
    with pytest.raises(NotApprovedError, match=r"version 1 will not be deployed: .*trained_model.gate \(FAILED"):
        registry.require_evidence(client, "m", good)
    client.delete_model_version_tag("m", good, "evidence.processed_dataset")
    client.set_model_version_tag("m", good, "gate.trained_model.gate", "passed: 1.0 vs 0.5")
    with pytest.raises(NotApprovedError, match="no evidence of passing the blocking checks of processed_dataset"):
        registry.require_evidence(client, "m", good)


def test_the_local_view_of_the_registry_holds_only_while_the_store_is_untouched(client, tmp_path):
    from fin_behavior.ml import registry_view

    uri, var = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "var"  # the fixture's store
    v1 = _register(client, _bundle(tmp_path, "a", b"model-1")).version
    v2 = _register(client, _bundle(tmp_path, "b", b"model-2")).version  # candidate now
    registry.promote(client, "m", v1)
    registry_view.refresh(client, var, uri, "m")
    view = registry_view.load(var, uri, "m")
    assert view is not None and (view.alias(registry.CANDIDATE), view.alias(registry.PRODUCTION)) == (v2, v1)
    assert view.tags[v1][registry.BUNDLE_TAG] == client.get_model_version("m", v1).tags[registry.BUNDLE_TAG]
    assert registry_view.load(var, uri, "other") is None and registry_view.load(var, uri + "x", "m") is None

    registry.promote(client, "m", v1)  # production already names it: nothing written, the view still holds
    assert registry_view.load(var, uri, "m") == view
    client.set_registered_model_alias("m", registry.PRODUCTION, v2)  # by hand, in the MLflow UI say
    assert registry_view.load(var, uri, "m") is None  # the store changed: MLflow is asked again
    assert registry_view.load(var, "http://mlflow.example", "m") is None  # no file to stamp: never used
