"""compatible_model through Dagster, in the real local serving environment, and verify-env on its result."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from fin_behavior.cli import main
from fin_behavior.defs.compatible import compatible_model, serving_environment, training_environment
from fin_behavior.defs.dataset import ground_truth, processed_dataset, raw_transactions
from fin_behavior.defs.model import trained_model
from fin_behavior.defs.registry import registered_model_version
from fin_behavior.defs.resources import MlflowTracking, StorageResource
from fin_behavior.environments.spec import DEFAULT_SPEC_FILE
from fin_behavior.records import ModelInfo
from fin_behavior.serving.features import definition_id
from fin_behavior.settings import get_settings
from fin_behavior_tests.helpers import ENVS, dagster_instance
from fin_behavior_tests.helpers import FAST_TRAINING as FAST

ASSETS = [
    raw_transactions,
    ground_truth,
    processed_dataset,
    trained_model,
    training_environment,
    serving_environment,
    compatible_model,
    registered_model_version,
]


def _materialize(instance, storage: StorageResource | None = None, **compatible_config):
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources={"storage": storage or StorageResource(), "mlflow": MlflowTracking()},
        run_config={"ops": {"trained_model": {"config": FAST}, "compatible_model": {"config": compatible_config}}},
        selection=dg.AssetSelection.all(include_sources=True),
    )


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """One pipeline run through registration, shared by this module's tests (it takes ~30 s)."""
    var = tmp_path_factory.mktemp("var")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIN_BEHAVIOR_VAR_DIR", str(var))
        patch.setenv("FIN_BEHAVIOR_ENVS_DIR", str(ENVS))
        get_settings.cache_clear()
        with dagster_instance() as instance:
            yield _materialize(instance), instance, var


@pytest.fixture
def pipeline_run(state, monkeypatch):
    _, _, var = state
    monkeypatch.setenv("FIN_BEHAVIOR_VAR_DIR", str(var))
    monkeypatch.setenv("FIN_BEHAVIOR_ENVS_DIR", str(ENVS))
    get_settings.cache_clear()
    return state


def test_compatible_model_is_rebuilt_verified_and_described(pipeline_run):
    result, instance, var = pipeline_run
    checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["compatible_model"]}
    assert set(checks) == {
        "loads_cleanly", "quality_parity", "onnx_parity", "feature_parity", "environment_consistency"
    }  # fmt: skip
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    assert "every feature identical" in checks["feature_parity"].description
    assert checks["onnx_parity"].metadata["actual"].value <= 1e-4

    event = instance.get_latest_materialization_event(dg.AssetKey("compatible_model")).asset_materialization
    meta = {k: v.value for k, v in event.metadata.items()}
    assert meta["sklearn_training"].startswith("1.9.") and meta["sklearn_serving"] == "1.8.0"
    assert meta["refit_in_serving_environment"] is True
    assert "InconsistentVersionWarning" in meta["training_pickle_in_serving_env"]
    serving_version = instance.get_latest_data_version_record(dg.AssetKey("serving_environment"))
    assert event.tags["dagster/input_data_version/serving_environment"] == meta["environment_fingerprint"]
    assert serving_version is not None

    version_dir = var / "artifacts" / "compatible_model" / meta["model_version"]
    info = ModelInfo.read(version_dir / "bundle")
    assert info.environment_fingerprint == meta["environment_fingerprint"]
    assert set(info.sha256) == {
        "model.joblib",
        "model.onnx",
        "expected.json",
        "reference_profile.json",
        "environment.json",
        "global_importance.json",
    }
    shipped = json.loads((version_dir / "bundle" / "global_importance.json").read_text())["columns"]
    assert set(shipped) == {f.name for f in info.features}
    assert meta["global_importance"] == {k: round(v, 5) for k, v in shipped.items()}
    assert "![global](data:image/png;base64," in meta["global_importance_plot"]
    lock = json.loads((version_dir / "bundle" / "environment.json").read_text())  # what another machine rebuilds
    assert (lock["name"], lock["fingerprint"]) == ("local", info.environment_fingerprint) and lock["pins"]
    assert {f.name for f in info.features} >= {"age", "city"}
    assert info.feature_definition == definition_id()  # verified on the hold-out's raw twins, shipped with them
    expected = json.loads((version_dir / "bundle" / "expected.json").read_text())
    assert len(expected["raw_records"]) == len(expected["records"]) > 0
    assert "Transaction Date" in expected["raw_records"][0] and "transaction_month" not in expected["raw_records"][0]
    assert {p.name for p in version_dir.iterdir()} == {"bundle", "verification.json", "evidence.json"}
    assert meta["approved"] is True


def test_verify_env_exit_codes(pipeline_run, tmp_path, monkeypatch, capsys):
    assert main(["verify-env"]) == 0
    assert "OK:" in capsys.readouterr().out

    # The serving spec moves to another scikit-learn: the bundle no longer matches it.
    changed = tmp_path / "envs.toml"
    changed.write_text(DEFAULT_SPEC_FILE.read_text().replace("scikit-learn==1.8.0", "scikit-learn==1.7.2"))
    monkeypatch.setenv("FIN_BEHAVIOR_SERVING_ENVIRONMENTS_FILE", str(changed))
    get_settings.cache_clear()
    assert main(["verify-env"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "compatible_model" in out and "1.7.2" in out

    monkeypatch.setenv("FIN_BEHAVIOR_SERVING_ENVIRONMENT", "no-such-env")
    get_settings.cache_clear()
    assert main(["verify-env"]) == 2
    assert "no serving environment named 'no-such-env'" in capsys.readouterr().err


def test_bundle_is_registered_once_as_candidate(pipeline_run):
    from mlflow import MlflowClient

    result, instance, var = pipeline_run
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "candidate_is_current_bundle")
    assert check.passed
    meta = instance.get_latest_materialization_event(dg.AssetKey("registered_model_version")).asset_materialization
    assert meta.metadata["newly_registered"].value is True and meta.metadata["production_version"].value == "none"
    client = MlflowClient(tracking_uri=f"sqlite:///{var.resolve()}/mlflow/mlflow.db")
    version = client.get_model_version_by_alias("financial-behavior-model", "candidate")
    assert str(version.version) == meta.metadata["version"].value  # MLflow answers an int here
    bundles = var / "artifacts" / "compatible_model"
    info = ModelInfo.read(bundles / (bundles / "CURRENT").read_text().strip() / "bundle")
    assert version.tags["sha256.model.onnx"] == info.sha256["model.onnx"]
    assert version.tags["environment_fingerprint"] == info.environment_fingerprint
    assert version.tags["evidence.approved"] == "true"
    assert version.tags["gate.compatible_model.onnx_parity"].startswith("passed")
    assert version.tags["gate.trained_model.roc_auc_gate"].startswith("passed")
    assert version.tags["gate.processed_dataset.no_target_leakage"].startswith("passed")

    again = _materialize(instance)  # same data, same model, same bundle: no new version
    second = instance.get_latest_materialization_event(dg.AssetKey("registered_model_version")).asset_materialization
    assert again.success and second.metadata["newly_registered"].value is False
    rebuilt = instance.get_latest_materialization_event(dg.AssetKey("compatible_model")).asset_materialization
    assert rebuilt.metadata["reused_existing_bundle"].value is True
    assert second.metadata["version"].value == meta.metadata["version"].value
    assert second.tags["dagster/data_version"] == meta.tags["dagster/data_version"]


def test_machines_sharing_only_the_artifact_store_both_pass_the_bundle_checks(pipeline_run, tmp_path):
    """A second machine with its own state directory finds the bundle version (and its evidence) in the store:
    compatible_model and its checks pass there without the first machine's disk."""
    _, _, var = pipeline_run
    store_url = (tmp_path / "object-store").as_uri()
    first = StorageResource(var_dir=str(var), artifact_store_url=store_url)
    second = StorageResource(var_dir=str(tmp_path / "other-machine"), artifact_store_url=store_url)
    with dagster_instance() as instance:
        for machine in (first, second):
            result = _materialize(instance, machine)
            assert result.success
            checks = [e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["compatible_model"]]
            assert len(checks) == 5 and all(c.passed for c in checks), {c.check_name: c.description for c in checks}
    assert (tmp_path / "other-machine" / "artifacts" / "compatible_model" / "CURRENT").read_text() == (
        var / "artifacts" / "compatible_model" / "CURRENT"
    ).read_text()
