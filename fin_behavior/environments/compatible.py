"""Making a trained model safe to serve: rebuild it with the serving environment's libraries when they
differ from training's, verify every artifact there, and describe the bundle in `model_info.json`.

This is the seeds' failure made impossible to ship: a forest pickled by scikit-learn 1.7 crashed a
container with 1.0.2. Here the original pickle is also tried in the serving environment, so the report
shows whether it would have failed, and why.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from fin_behavior.data.columns import FEATURES, KEY, NUMERIC_FEATURES, TARGET
from fin_behavior.environments.builder import BuiltEnvironment, write_lock
from fin_behavior.environments.verification import (
    BuildAnswer,
    FeatureParity,
    VerificationReport,
    VerifyAnswer,
    write_report,
)
from fin_behavior.monitoring.profile import build_profile, write_profile
from fin_behavior.outcome import Outcome
from fin_behavior.records import BundleFiles, Evidence, FeatureSpec, ModelInfo, TrainingRecord, sha256_file
from fin_behavior.serving.features import definition_id
from fin_behavior.serving.raw_records import RecordSchema
from fin_behavior.settings import Settings
from fin_behavior.storage.store import VersionStore

STAGE = "compatible_model"
CODE_VERSION = "compatible-v5"  # v5: raw records verified and shipped (feature_definition, raw_records)
CHECKS = {  # name -> (blocking, what it asks): judged once, published with the bundle version
    "loads_cleanly": (True, "Every artifact loads in the serving environment with warnings as errors."),
    "quality_parity": (True, "Serving ROC-AUC within parity_tolerance of the trained model's."),
    "onnx_parity": (True, "ONNX probabilities within 1e-4 of joblib's; labels agree at the decision threshold."),
    "feature_parity": (
        True,
        "The feature definition the bundle records derives exactly the trained features from the hold-out's raw "
        "records (the twins a deployment's parity gate replays).",
    ),
}
# Not about the bundle but about the world around it, so judged again on every run (verify-env in the UI).
CONSISTENCY_CHECK = {
    "environment_consistency": (False, "Project pins, training env, bundle and serving spec agree (verify-env)."),
}
BUNDLE_DIR = "bundle"  # what ships: registered, downloaded and served as it is
EXPECTED_RECORDS = 200  # hold-out rows a deployment must score exactly as verified here


class ServingTaskError(RuntimeError):
    """A task inside the serving environment failed; the message carries its traceback tail."""


@dataclass(frozen=True)
class TrainedInputs:
    """What the compatibility stage takes from an approved trained version."""

    model_path: Path
    best_params: dict[str, Any]
    random_state: int
    sklearn_version: str
    trained_version: str
    data_version: str
    roc_auc: float
    decision_threshold: float
    features: tuple[str, ...] = FEATURES  # the columns the model reads (the bundle still takes all of FEATURES)

    @classmethod
    def of(cls, record: TrainingRecord, model_path: Path) -> TrainedInputs:
        return cls(
            model_path,
            record.best_params,
            record.random_state,
            record.package_versions["scikit-learn"],
            record.version,
            record.data_version,
            record.metrics["roc_auc"],
            record.decision_threshold,
            tuple(record.training.get("features", FEATURES)),
        )


def version_of(trained: TrainedInputs, environment_fingerprint: str, settings: Settings) -> str:
    """Same trained model, serving environment, code and parity tolerance -> same bundle version, so the
    bytes (and sha256s) stay identical and the registry sees the same content."""
    key = json.dumps([trained.trained_version, environment_fingerprint, CODE_VERSION, settings.parity_tolerance])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _run_task(env: BuiltEnvironment, task: str, workdir: Path) -> Any:
    """The task's answer (serving_tasks.py writes it: `BuildAnswer` for build, `VerifyAnswer` for verify)."""
    proc = subprocess.run(
        [str(env.python), "-m", "fin_behavior.environments.serving_tasks", task, str(workdir)],
        capture_output=True,
        text=True,
        timeout=3_600,
    )
    output = workdir / f"{task}.json"
    if proc.returncode != 0 or not output.exists():
        error_file = workdir / f"{task}.error"
        detail = error_file.read_text() if error_file.exists() else proc.stderr
        raise ServingTaskError(
            f"`{task}` failed inside serving environment {env.spec.name!r} ({env.path}):\n{detail.strip()[-3000:]}"
        )
    return json.loads(output.read_text())


def _write_split(dataset: pd.DataFrame, holdout_ids: pd.Series, workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): the feature columns and the target (test keeps KEY, to find each row's raw record)."""
    test_mask = dataset[KEY].isin(set(holdout_ids))
    columns = [*FEATURES, TARGET]
    train, test = dataset.loc[~test_mask, columns], dataset.loc[test_mask, [KEY, *columns]]
    train.to_csv(workdir / "train.csv", index=False)
    test[columns].to_csv(workdir / "test.csv", index=False)
    return train, test


def build_bundle(
    env: BuiltEnvironment,
    trained: TrainedInputs,
    dataset: pd.DataFrame,
    holdout_ids: pd.Series,
    workdir: Path,
    raw_inputs: pd.DataFrame | None = None,
) -> VerificationReport:
    """Build and verify the bundle in `workdir/bundle` (and the report in `workdir/verification.json`);
    returns the verification report. `raw_inputs` (processing.read_raw_inputs): the rows' raw records, from which
    the hold-out's raw twins are derived and shipped."""
    workdir.mkdir(parents=True, exist_ok=True)
    train, test = _write_split(dataset, holdout_ids, workdir)
    reuse = env.version_of("scikit-learn") == trained.sklearn_version
    request = {
        "runtime": env.spec.runtime,
        "environment": env.spec.name,
        "best_params": trained.best_params,
        "random_state": trained.random_state,
        "reuse_model": str(trained.model_path) if reuse else None,
        "features": list(trained.features),
    }
    (workdir / "request.json").write_text(json.dumps(request))
    built = cast(BuildAnswer, _run_task(env, "build", workdir))

    bundle = workdir / BUNDLE_DIR
    to_verify = {
        "original_training_pickle": str(trained.model_path),
        BundleFiles.MODEL: str(bundle / BundleFiles.MODEL),
    }
    if env.spec.runtime == "onnx":
        to_verify[BundleFiles.ONNX] = str(bundle / BundleFiles.ONNX)
    (workdir / "request.json").write_text(json.dumps(request | {"verify": to_verify}))
    verified = cast(VerifyAnswer, _run_task(env, "verify", workdir))
    served_proba = verified["artifacts"][BundleFiles.served(env.spec.runtime)].get("proba")
    report: VerificationReport = {
        **verified,
        "refit": built["refit"],
        "categories": built["categories"],
        "y_test": test[TARGET].tolist(),
        "feature_parity": write_expected(test, served_proba, bundle / BundleFiles.EXPECTED, raw_inputs),
    }
    write_report(workdir, report)
    if served_proba is not None:  # the monitor's reference: this version's training rows and served hold-out
        write_profile(build_profile(train, served_proba), bundle)
    if "columns" in report["global_importance"]:  # the global view ships with the version
        (bundle / BundleFiles.IMPORTANCE).write_text(json.dumps(report["global_importance"]))
    return report


def write_expected(
    test: pd.DataFrame, proba: list[float] | None, path: Path, raw_inputs: pd.DataFrame | None = None
) -> FeatureParity | None:
    """Complete hold-out records and the probabilities the served artifact gave them in the serving
    environment: a deployment's smoke and parity gates replay them against the running service. With the
    rows' raw inputs, each record's raw twin too (`raw_records`, same order, same probabilities), once the feature
    definition derived exactly the record's features from it; returns that comparison (None: no raw inputs)."""
    if proba is None:
        return None  # the artifact did not predict; loads_cleanly fails and nothing is deployed
    rows = test.assign(_proba=proba).dropna()
    if raw_inputs is not None:  # only rows whose key names one raw record: the twin must be the row's own
        unique = raw_inputs.drop_duplicates(KEY, keep=False).set_index(KEY)
        rows = rows[rows[KEY].isin(unique.index)]
    rows = rows.head(EXPECTED_RECORDS)
    expected: dict[str, Any] = {
        "records": rows[list(FEATURES)].to_dict("records"),  # native Python scalars
        "probabilities": rows["_proba"].tolist(),
    }
    parity = None
    if raw_inputs is not None:
        raw = unique.loc[rows[KEY]]
        expected["raw_records"] = [
            {"TransactionID": key, **record} for key, record in zip(raw.index, raw.to_dict("records"), strict=True)
        ]
        parity = feature_parity_of(rows[list(FEATURES)], expected["raw_records"])
    path.write_text(json.dumps(expected))
    return parity


def feature_parity_of(features: pd.DataFrame, raw_records: list[dict[str, Any]]) -> FeatureParity:
    """How far the features the service derives from `raw_records` (its own parsing path, raw_records.py) are
    from `features` (the ones the model was trained and verified on)."""
    specs = [FeatureSpec(name, "float" if name in NUMERIC_FEATURES else "string") for name in FEATURES]
    derived = RecordSchema(specs, refusal="").parse(raw_records, max_rows=len(raw_records) or 1).columns
    mismatched: list[str] = []
    max_diff = 0.0
    for name in FEATURES:
        ours, theirs = pd.Series(derived[name]), features[name].reset_index(drop=True)
        if name in NUMERIC_FEATURES:
            diff = float(np.nanmax(np.abs(ours.to_numpy(float) - theirs.to_numpy(float)), initial=0.0))
            same = diff == 0.0 and bool((ours.isna() == theirs.isna()).all())
            max_diff = max(max_diff, diff)
        else:
            same = bool((ours.astype(str) == theirs.astype(str)).all())
        if not same:
            mismatched.append(name)
    return {"rows": len(features), "mismatched": mismatched, "max_abs_diff": max_diff, "definition": definition_id()}


def model_info(env: BuiltEnvironment, trained: TrainedInputs, report: VerificationReport, bundle: Path) -> ModelInfo:
    """The manifest: every file in the bundle with its sha256 (written last, it lists everything else)."""
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != BundleFiles.INFO)
    return ModelInfo(
        serving_environment=env.spec.name,
        runtime=env.spec.runtime,
        environment_fingerprint=env.fingerprint,
        package_versions=report["versions"],
        training_package_versions={"scikit-learn": trained.sklearn_version},
        refit_in_serving_environment=report["refit"],
        features=[
            FeatureSpec(
                name,
                "float" if name in NUMERIC_FEATURES else "string",
                report["categories"].get(name),
            )
            for name in FEATURES
        ],
        target=TARGET,
        model_features=list(trained.features),
        decision_threshold=trained.decision_threshold,
        trained_model_version=trained.trained_version,
        data_version=trained.data_version,
        feature_definition=_verified_definition(report),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sha256={p.relative_to(bundle).as_posix(): sha256_file(p) for p in files},
    )


def _verified_definition(report: VerificationReport) -> str:
    """The definition the bundle may score raw records with: recorded only when its parity was verified."""
    parity = report["feature_parity"]
    return parity["definition"] if parity and parity["rows"] and not parity["mismatched"] else ""


# Checks on a verification report -------------------------------------------------------------------------


def feature_parity(report: VerificationReport) -> Outcome:
    parity = report["feature_parity"]
    if parity is None:
        return Outcome(
            True,
            0,
            0,
            "the dataset version holds no raw inputs (published before processed-v3): the bundle records no "
            "feature definition, so it scores feature-shaped records only",
        )
    mismatched = parity["mismatched"]
    found = f"{parity['definition']} derived the trained features from {parity['rows']} hold-out raw records"
    differ = f"features that differ: {', '.join(mismatched)} (max |diff| {parity['max_abs_diff']:.3g})"
    return Outcome(
        not mismatched and parity["rows"] > 0,
        len(mismatched),
        0,
        f"{found}; {differ if mismatched else 'every feature identical'}",
    )


def loads_cleanly(report: VerificationReport) -> Outcome:
    shipped = {k: v for k, v in report["artifacts"].items() if k != "original_training_pickle"}
    failures = {k: v["error"] or "" for k, v in shipped.items() if not v["loads_cleanly"]}
    original = report["artifacts"]["original_training_pickle"]
    history = (
        "the training pickle also loads there"
        if original["loads_cleanly"]
        else (f"the training pickle alone would have failed there ({(original['error'] or '')[:300]})")
    )
    if failures:
        detail = "; ".join(f"{k}: {v[:300]}" for k, v in failures.items())
        return Outcome(
            False, len(failures), 0, f"artifacts that do not load cleanly in the serving environment: {detail}"
        )
    return Outcome(True, 0, 0, f"every artifact loads with warnings as errors and predicts; {history}")


def quality_parity(report: VerificationReport, trained_roc_auc: float, tolerance: float) -> Outcome:
    from sklearn.metrics import roc_auc_score

    proba = report["artifacts"][BundleFiles.MODEL].get("proba")
    if proba is None:
        return Outcome(False, float("nan"), tolerance, "the bundle's model did not predict in the serving environment")
    auc = float(roc_auc_score(report["y_test"], proba))
    delta = abs(auc - trained_roc_auc)
    message = (
        f"serving ROC-AUC {auc:.4f} vs trained {trained_roc_auc:.4f}: |delta| {delta:.4f} "
        f"(tolerance {tolerance}, setting parity_tolerance / FIN_BEHAVIOR_PARITY_TOLERANCE)"
    )
    return Outcome(delta <= tolerance, round(delta, 6), tolerance, message)


def onnx_parity(
    report: VerificationReport, threshold: float, max_abs_diff: float = 1e-4, min_agreement: float = 0.999
) -> Outcome:
    if BundleFiles.ONNX not in report["artifacts"]:
        return Outcome(True, 0.0, max_abs_diff, "runtime is sklearn: no ONNX artifact to compare")
    reference = report["artifacts"][BundleFiles.MODEL].get("proba")
    onnx = report["artifacts"][BundleFiles.ONNX].get("proba")
    if reference is None or onnx is None:
        return Outcome(False, float("nan"), max_abs_diff, "the ONNX model or the joblib model did not predict")
    a, b = np.asarray(reference), np.asarray(onnx)
    diff = float(np.max(np.abs(a - b))) if len(a) else 0.0
    agreement = float(np.mean((a >= threshold) == (b >= threshold))) if len(a) else 1.0
    passed = diff <= max_abs_diff and agreement >= min_agreement
    return Outcome(
        passed,
        diff,
        max_abs_diff,
        f"max |ONNX - joblib| probability {diff:.2e} (limit {max_abs_diff:.0e}); labels agree on "
        f"{agreement:.4%} of {len(a)} rows (minimum {min_agreement:.1%})",
    )


def judge(version: str, report: VerificationReport, trained: TrainedInputs, settings: Settings) -> Evidence:
    outcomes = {
        "loads_cleanly": loads_cleanly(report),
        "quality_parity": quality_parity(report, trained.roc_auc, settings.parity_tolerance),
        "onnx_parity": onnx_parity(report, trained.decision_threshold),
        "feature_parity": feature_parity(report),
    }
    return Evidence.judge(STAGE, version, CHECKS, outcomes)


def build_version(
    env: BuiltEnvironment,
    trained: TrainedInputs,
    dataset: pd.DataFrame,
    holdout_ids: pd.Series,
    store: VersionStore,
    settings: Settings,
    scratch: Path,
    raw_inputs: pd.DataFrame | None = None,
) -> Evidence:
    """Build, verify, judge and publish the bundle version for `trained` in `env`."""
    version = version_of(trained, env.fingerprint, settings)
    staging = store.staging(version)
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as work:
        report = build_bundle(env, trained, dataset, holdout_ids, Path(work), raw_inputs)
        shutil.copytree(Path(work) / BUNDLE_DIR, staging / BUNDLE_DIR)
        write_report(staging, report)
    write_lock(env, staging / BUNDLE_DIR / BundleFiles.ENVIRONMENT)
    model_info(env, trained, report, staging / BUNDLE_DIR).write(staging / BUNDLE_DIR)
    evidence = judge(version, report, trained, settings)
    store.publish(staging, evidence)
    return evidence
