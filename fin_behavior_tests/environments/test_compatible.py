"""The seeds' failure, reproduced and prevented, with real uv-built serving environments.

Environments are cached across runs under var/test-envs (see fin_behavior_tests.helpers.ENVS)."""

from __future__ import annotations

import json
import shutil
import subprocess

import joblib
import pytest

from fin_behavior.data.processing import process_raw_file
from fin_behavior.environments import builder, compatible, verification
from fin_behavior.environments.spec import EnvironmentSpec, get_spec
from fin_behavior.ml.train import train
from fin_behavior.records import BundleFiles
from fin_behavior_tests.helpers import ENVS, fast_options

FAST = fast_options(n_estimators=[20, 40])


@pytest.fixture(scope="session")
def local_env():
    return builder.build(get_spec("local"), ENVS)


@pytest.fixture(scope="session")
def azure_env():
    try:
        return builder.build(get_spec("azureml-sklearn-1.5"), ENVS)
    except builder.EnvironmentBuildError as exc:  # e.g. no Python 3.10 on this machine: say so, loudly
        pytest.skip(f"azureml-sklearn-1.5 cannot be built here: {exc}")


@pytest.fixture(scope="module")
def trained(banking_csv, tmp_path_factory):
    """A model pickled by the training environment (scikit-learn 1.9.x), as the seeds' was."""
    dataset = process_raw_file(banking_csv, 0.95).dataset
    model = train(dataset, FAST)
    path = tmp_path_factory.mktemp("trained") / "model.joblib"
    joblib.dump(model.pipeline, path)
    from sklearn import __version__ as sklearn_version
    from sklearn.metrics import roc_auc_score

    inputs = compatible.TrainedInputs(
        model_path=path,
        best_params=model.search.best_params,
        random_state=42,
        sklearn_version=sklearn_version,
        trained_version="t1",
        data_version="d1",
        roc_auc=roc_auc_score(model.split.y_test, model.pipeline.predict_proba(model.split.x_test)[:, 1]),
        decision_threshold=model.search.decision_threshold,
        features=FAST.features,
    )
    return inputs, dataset, model.split.test_ids


def test_environment_is_built_once_and_reused(local_env):
    marker = local_env.path / "fin_behavior_env.json"
    before = marker.stat().st_mtime_ns
    again = builder.build(local_env.spec, ENVS)
    assert again.path == local_env.path and marker.stat().st_mtime_ns == before
    assert local_env.version_of("scikit-learn") == "1.8.0"
    assert json.loads(marker.read_text())["fingerprint"] == local_env.fingerprint
    site = next(local_env.path.glob("lib/python3.*/site-packages"))  # its bytecode written once, at build time
    assert list((site / "sklearn" / "__pycache__").glob("__init__.cpython-*.pyc"))


def test_an_environment_built_without_its_bytecode_gets_it_once_on_its_next_use(tmp_path):
    """As environments were built before they carried it: each start of a process that may not write bytecode
    compiled every module it imported."""
    python = builder.find_python("3.11")
    resolution = builder.Resolution(python, builder.python_version(python) or "", ())
    old = builder.built_path(tmp_path, "old", resolution.fingerprint)
    subprocess.run([builder.uv_binary(), "venv", "--quiet", "--python", python, str(old)], check=True)
    site = next(old.glob("lib/python3.*/site-packages"))
    (site / "shipped.py").write_text("VALUE = 1\n")
    marker = old / "fin_behavior_env.json"
    marker.write_text(json.dumps({"fingerprint": resolution.fingerprint, "python": resolution.python_version}))
    spec = EnvironmentSpec("old", "3.11", "sklearn", ())

    assert builder.build(spec, tmp_path, resolution).path == old  # reused, not rebuilt
    assert list((site / "__pycache__").glob("shipped.cpython-*.pyc"))
    assert json.loads(marker.read_text())["bytecode"] is True
    compiled = marker.stat().st_mtime_ns
    builder.build(spec, tmp_path, resolution)
    assert marker.stat().st_mtime_ns == compiled  # once


def test_another_machine_builds_the_exact_environment_a_bundle_records(local_env, tmp_path):
    lock = tmp_path / BundleFiles.ENVIRONMENT
    builder.write_lock(local_env, lock)
    elsewhere = tmp_path / "another-worker-envs"  # has built nothing
    args = (lock, local_env.spec.name, local_env.fingerprint)
    exact = (local_env.resolution.python_version, local_env.resolution.pins)
    assert builder.locked_resolution(*args, elsewhere) == exact

    built = builder.ensure_locked(*args, elsewhere)
    assert built == builder.built_path(elsewhere, local_env.spec.name, local_env.fingerprint)
    assert builder.built_resolution(built) == exact
    versions = subprocess.run(
        [built / "bin" / "python", "-c", "import sklearn, onnxruntime; print(sklearn.__version__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert versions.stdout.strip() == local_env.version_of("scikit-learn")

    record = json.loads(lock.read_text())
    lock.write_text(json.dumps(record | {"pins": [*record["pins"][1:], "numpy==1.0.0"]}))  # not what was verified
    with pytest.raises(builder.EnvironmentBuildError, match="does not describe"):
        builder.ensure_locked(*args, tmp_path / "third")
    lock.unlink()  # a bundle from before bundles carried it, on a machine without the environment
    with pytest.raises(builder.EnvironmentBuildError, match=r"neither recorded in it nor built.*rebuild_compatible"):
        builder.ensure_locked(*args, tmp_path / "third")


def test_seed_failure_is_detected_and_the_rebuild_passes(azure_env, trained, tmp_path):
    inputs, dataset, test_ids = trained
    assert azure_env.version_of("scikit-learn").startswith("1.5.")
    report = compatible.build_bundle(azure_env, inputs, dataset, test_ids, tmp_path)

    original = report["artifacts"]["original_training_pickle"]
    assert not original["loads_cleanly"]  # what crashed the seeds' container
    assert "InconsistentVersionWarning" in original["error"] or "Error" in original["error"]

    assert report["refit"] is True and report["versions"]["scikit-learn"].startswith("1.5.")
    assert compatible.loads_cleanly(report).passed
    assert compatible.quality_parity(report, inputs.roc_auc, 0.02).passed
    assert compatible.onnx_parity(report, inputs.decision_threshold).passed  # sklearn runtime: nothing to compare
    assert not (tmp_path / "bundle" / BundleFiles.ONNX).exists()


def test_onnx_bundle_matches_and_tampering_is_caught(local_env, trained, tmp_path):
    inputs, dataset, test_ids = trained
    report = compatible.build_bundle(local_env, inputs, dataset, test_ids, tmp_path / "good")
    assert compatible.loads_cleanly(report).passed
    parity = compatible.onnx_parity(report, inputs.decision_threshold)
    assert parity.passed and parity.actual <= 1e-4
    info = compatible.model_info(local_env, inputs, report, tmp_path / "good" / "bundle")
    assert set(info.sha256) == {
        "model.joblib",
        "model.onnx",
        "expected.json",
        "reference_profile.json",
        "global_importance.json",
    }  # everything in the bundle
    assert not (tmp_path / "good" / "bundle" / verification.VERIFICATION).exists()  # evidence lives beside it
    assert info.decision_threshold == inputs.decision_threshold
    expected = json.loads((tmp_path / "good" / "bundle" / "expected.json").read_text())
    records, probabilities = expected["records"], expected["probabilities"]
    assert len(records) == len(probabilities) > 0 and all(None not in r.values() for r in records)
    served = report["artifacts"]["model.onnx"]["proba"]  # what the ONNX artifact gave in the serving env
    assert set(probabilities) <= {float(p) for p in served}
    assert info.package_versions["scikit-learn"] == "1.8.0" and info.training_package_versions
    city = next(f for f in info.features if f.name == "city")
    assert city.dtype == "string" and "Boston" in city.categories

    # Swap in the ONNX of another model: parity must fail.
    other_inputs = compatible.TrainedInputs(
        **{**inputs.__dict__, "best_params": {**inputs.best_params, "max_depth": 3, "n_estimators": 5}}
    )
    other = compatible.build_bundle(local_env, other_inputs, dataset, test_ids, tmp_path / "other")
    tampered = tmp_path / "tampered"
    shutil.copytree(tmp_path / "good", tampered)
    shutil.copy(tmp_path / "other" / "bundle" / "model.onnx", tampered / "bundle" / "model.onnx")
    request = json.loads((tampered / "request.json").read_text())
    request["verify"] = {k: v.replace(str(tmp_path / "good"), str(tampered)) for k, v in request["verify"].items()}
    (tampered / "request.json").write_text(json.dumps(request))
    swapped = compatible._run_task(local_env, "verify", tampered) | {"y_test": report["y_test"]}
    assert not compatible.onnx_parity(swapped, inputs.decision_threshold).passed
    assert other["artifacts"]["model.joblib"]["loads_cleanly"]

    # Truncate the joblib file: it no longer loads, and the check says which artifact.
    data = (tampered / "bundle" / "model.joblib").read_bytes()
    (tampered / "bundle" / "model.joblib").write_bytes(data[: len(data) // 2])
    truncated = compatible._run_task(local_env, "verify", tampered) | {"y_test": report["y_test"]}
    outcome = compatible.loads_cleanly(truncated)
    assert not outcome.passed and "model.joblib" in outcome.message


def test_quality_parity_fails_outside_the_tolerance(trained):
    inputs, *_ = trained
    report = {"artifacts": {"model.joblib": {"proba": [0.9, 0.1, 0.8, 0.2]}}, "y_test": [0, 1, 0, 1]}
    outcome = compatible.quality_parity(report, inputs.roc_auc, 0.02)
    assert not outcome.passed and "parity_tolerance" in outcome.message


def test_serving_tasks_report_their_own_failure(local_env, tmp_path):
    (tmp_path / "request.json").write_text(json.dumps({"runtime": "onnx", "verify": {}}))
    with pytest.raises(compatible.ServingTaskError, match=r"`verify` failed inside serving environment 'local'"):
        compatible._run_task(local_env, "verify", tmp_path)  # no test.csv
