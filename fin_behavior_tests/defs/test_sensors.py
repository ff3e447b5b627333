"""The drift sensors: what they compare, when they ask for a run, and when they hold back."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from fin_behavior.data.generate import generate_csv
from fin_behavior.definitions import defs
from fin_behavior.defs.dataset import ground_truth, processed_dataset, raw_transactions
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.defs.sensors import data_version_sensor, environment_drift_sensor
from fin_behavior.environments import builder, verify
from fin_behavior.package_versions import model_package_versions
from fin_behavior.records import ModelInfo, TrainingRecord
from fin_behavior.settings import get_settings
from fin_behavior.storage.store import VersionStore
from fin_behavior_tests.helpers import dagster_instance, evidence


@pytest.fixture
def instance():
    with dagster_instance() as inst:
        yield inst


def _tick(sensor, instance, storage, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"storage": storage, "mlflow": MlflowTracking()}
    )
    return sensor(context), context.cursor


def test_data_sensor_requests_one_run_per_new_version(instance, tmp_path, banking_csv):
    raw = tmp_path / "raw.csv"
    shutil.copy(banking_csv, raw)
    storage = StorageResource(raw_data_path=str(raw))

    first, cursor = _tick(data_version_sensor, instance, storage)
    assert isinstance(first, dg.RunRequest) and first.run_key == f"data-{cursor}"  # never processed yet

    dg.materialize(
        [raw_transactions, ground_truth, processed_dataset],
        instance=instance,
        resources={"storage": storage},
        selection=dg.AssetSelection.all(include_sources=True),
    )
    unchanged, _ = _tick(data_version_sensor, instance, storage, cursor)
    assert isinstance(unchanged, dg.SkipReason)
    assert "the one processed_dataset was built from" in unchanged.skip_message

    generate_csv(raw, rows=2_000, seed=7)  # the file is replaced with new data
    changed, new_cursor = _tick(data_version_sensor, instance, storage, cursor)
    assert isinstance(changed, dg.RunRequest) and changed.run_key == f"data-{new_cursor}" != f"data-{cursor}"
    assert changed.tags["fin_behavior/raw_data_version"] == new_cursor

    again, _ = _tick(data_version_sensor, instance, storage, new_cursor)  # second tick: nothing more
    assert isinstance(again, dg.SkipReason) and "already requested" in again.skip_message


def test_data_sensor_waits_for_a_run_in_progress(instance, tmp_path, banking_csv):
    raw = tmp_path / "raw.csv"
    shutil.copy(banking_csv, raw)
    storage = StorageResource(raw_data_path=str(raw))
    running = instance.create_run_for_job(job_def=defs.resolve_job_def("retrain"), status=dg.DagsterRunStatus.STARTED)
    held, cursor = _tick(data_version_sensor, instance, storage)
    assert isinstance(held, dg.SkipReason) and running.run_id in held.skip_message and cursor is None


def _publish_trained(var, version: str, package_versions: dict[str, str], passed: bool = True) -> None:
    """A trained model version trained with `package_versions` (the rest of its record is filler)."""
    store = VersionStore(var / "artifacts" / "trained_model")
    staging = store.staging(version)
    filler = {name: 0 for name in TrainingRecord.__dataclass_fields__}
    TrainingRecord.from_dict(filler | {"version": version, "package_versions": package_versions}).write(staging)
    store.publish(staging, evidence("trained_model", version, passed))


def _publish_bundle(var, version: str, fingerprint: str) -> None:
    store = VersionStore(var / "artifacts" / "compatible_model")
    staging = store.staging(version)
    (staging / "bundle").mkdir()
    filler = {name: "" for name in ModelInfo.__dataclass_fields__} | {"features": []}
    payload = filler | {"environment_fingerprint": fingerprint, "trained_model_version": "t1"}
    ModelInfo.from_dict(payload).write(staging / "bundle")
    store.publish(staging, evidence("compatible_model", version))


@pytest.fixture
def built_state(isolated_settings):
    """What the sensor reads: the current trained model's versions and the current bundle's fingerprint."""
    fingerprint = verify.serving_resolution(get_settings()).fingerprint
    versions = model_package_versions()
    _publish_trained(isolated_settings, "t1", versions)
    _publish_bundle(isolated_settings, "b1", fingerprint)
    return isolated_settings, versions, fingerprint


def test_environment_sensor_skips_and_says_what_it_compared(instance, built_state):
    _, _, fingerprint = built_state
    result, _ = _tick(environment_drift_sensor, instance, StorageResource())
    assert isinstance(result, dg.SkipReason)
    assert "training packages match trained model t1" in result.skip_message and fingerprint in result.skip_message


def test_training_drift_requests_a_retrain(instance, built_state):
    var, versions, _ = built_state
    _publish_trained(var, "t2", versions | {"scikit-learn": "1.0.2"})
    result, _ = _tick(environment_drift_sensor, instance, StorageResource())
    assert isinstance(result, dg.RunRequest) and result.job_name == "retrain"
    assert result.run_key.startswith("training-")
    assert f"scikit-learn 1.0.2 -> {versions['scikit-learn']}" in result.tags["fin_behavior/drift"]


def test_training_drift_is_judged_against_the_production_model(instance, built_state, tmp_path):
    """The current trained model matches this environment, but what serves was trained with other packages
    (its deployment came before a package upgrade): that is drift too."""
    from mlflow import MlflowClient

    from fin_behavior.ml import registry

    var, versions, _ = built_state
    _publish_trained(var, "t0", versions | {"numpy": "1.26.4"})
    _publish_trained(var, "t3", versions)
    client = MlflowClient(tracking_uri=get_settings().tracking_uri)
    name = get_settings().registered_model_name
    client.create_registered_model(name)
    (tmp_path / "bundle").mkdir()
    served = client.create_model_version(name, str(tmp_path / "bundle"), tags={"trained_model_version": "t0"})
    client.set_registered_model_alias(name, registry.PRODUCTION, served.version)

    result, _ = _tick(environment_drift_sensor, instance, StorageResource())
    assert isinstance(result, dg.RunRequest) and result.job_name == "retrain"
    assert f"numpy 1.26.4 -> {versions['numpy']}" in result.tags["fin_behavior/drift"]

    client.set_model_version_tag(name, served.version, "trained_model_version", "t3")  # now it serves t3
    result, _ = _tick(environment_drift_sensor, instance, StorageResource())
    assert isinstance(result, dg.SkipReason)
    assert f"match production model v{served.version} (trained model t3)" in result.skip_message


def test_serving_drift_requests_a_rebuild_and_resolution_is_cached(instance, built_state, monkeypatch):
    var, _, fingerprint = built_state
    _publish_bundle(var, "b2", "built-for-older")
    calls = []
    real = builder.resolve_spec
    monkeypatch.setattr(builder, "resolve_spec", lambda spec: calls.append(1) or real(spec))
    for _ in range(2):
        result, _ = _tick(environment_drift_sensor, instance, StorageResource())
        assert isinstance(result, dg.RunRequest) and result.job_name == "rebuild_compatible"
        assert result.run_key == f"serving-{fingerprint}"
    assert len(calls) == 1  # the second tick used the cached resolution


def test_environment_sensor_without_a_model_has_nothing_to_compare(instance):
    result, _ = _tick(environment_drift_sensor, instance, StorageResource())
    assert isinstance(result, dg.SkipReason) and "nothing to compare" in result.skip_message


def test_a_failed_attempt_is_not_what_the_sensor_compares(instance, built_state):
    """A retrain in a drifted environment that failed its gates must not become the reference: the approved
    version is still the one to compare (and the one serving)."""
    var, versions, _ = built_state
    _publish_trained(var, "t9", versions | {"numpy": "0.1"}, passed=False)
    result, _ = _tick(environment_drift_sensor, instance, StorageResource())
    assert isinstance(result, dg.SkipReason) and "trained model t1" in result.skip_message
