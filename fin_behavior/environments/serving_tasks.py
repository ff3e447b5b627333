"""Work that must happen *inside* a serving environment: build the model with its scikit-learn, export ONNX,
and verify that every artifact loads cleanly there and predicts the hold-out.

Run as `<env>/bin/python -m fin_behavior.environments.serving_tasks build|verify WORKDIR`. It imports no
Dagster, MLflow or pandera: only what a serving environment has. Input and output are files in WORKDIR:
`request.json`, `train.csv`, `test.csv` in; `bundle/` and the answer, `build.json` or `verify.json` (typed in
verification.py), out.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fin_behavior.data.columns import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES, TARGET
from fin_behavior.environments.verification import ArtifactResult, BuildAnswer, GlobalImportance, VerifyAnswer
from fin_behavior.package_versions import installed_versions
from fin_behavior.records import BundleFiles

MISSING_CATEGORY = ""  # ONNX string inputs cannot be null; like NaN in scikit-learn, "" is an unknown category
REPORTED_PACKAGES = ("scikit-learn", "numpy", "pandas", "joblib", "scipy", "onnxruntime", "skl2onnx")


def read_rows(path: Path) -> pd.DataFrame:
    dtypes = {name: "float64" for name in NUMERIC_FEATURES} | {name: "object" for name in CATEGORICAL_FEATURES}
    return pd.read_csv(path, dtype=dtypes | {TARGET: "int64"})


def onnx_inputs(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    inputs = {name: rows[[name]].to_numpy(dtype=np.float32) for name in NUMERIC_FEATURES}
    for name in CATEGORICAL_FEATURES:
        inputs[name] = rows[[name]].fillna(MISSING_CATEGORY).astype(str).to_numpy(dtype=object)
    return inputs


def export_onnx(pipeline, path: Path) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    initial_types = [(name, FloatTensorType([None, 1])) for name in NUMERIC_FEATURES]
    initial_types += [(name, StringTensorType([None, 1])) for name in CATEGORICAL_FEATURES]
    model = convert_sklearn(
        pipeline, initial_types=initial_types, options={id(pipeline.named_steps["clf"]): {"zipmap": False}}
    )
    path.write_bytes(model.SerializeToString())


def build(workdir: Path) -> BuildAnswer:
    import joblib

    from fin_behavior.ml.export import fold_scaler_into_forest
    from fin_behavior.ml.train import build_pipeline

    request = json.loads((workdir / "request.json").read_text())
    bundle = workdir / "bundle"
    bundle.mkdir(exist_ok=True)
    if request.get("reuse_model"):
        pipeline = joblib.load(request["reuse_model"])
    else:
        train = read_rows(workdir / "train.csv")
        features = request.get("features") or list(FEATURES)
        pipeline = build_pipeline(features, random_state=request["random_state"], **request["best_params"])
        pipeline.fit(train[list(FEATURES)], train[TARGET])
        pipeline.set_params(clf__n_jobs=None)
    pipeline = fold_scaler_into_forest(pipeline)
    joblib.dump(pipeline, bundle / BundleFiles.MODEL)
    if request["runtime"] == "onnx":
        export_onnx(pipeline, bundle / BundleFiles.ONNX)
    encoder = pipeline.named_steps["features"].named_transformers_["categorical"]
    read = encoder.feature_names_in_  # the categorical columns the model reads (a protected one may be left out)
    categories = {name: sorted(map(str, cats)) for name, cats in zip(read, encoder.categories_, strict=True)}
    return {
        "refit": not request.get("reuse_model"),
        "categories": categories,
        "versions": installed_versions(REPORTED_PACKAGES),
    }


def _load_cleanly(loader, *args):
    """(object, None) or (None, 'Kind: message'): any warning while loading counts as a failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return loader(*args), None
        except Exception as exc:  # every failure to load is reported, not raised
            return None, f"{type(exc).__name__}: {exc}"


def verify(workdir: Path) -> VerifyAnswer:
    import joblib

    request = json.loads((workdir / "request.json").read_text())
    test = read_rows(workdir / "test.csv")
    x = test[list(FEATURES)]
    artifacts: dict[str, ArtifactResult] = {}
    for name, path in request["verify"].items():
        if name == BundleFiles.ONNX:
            import onnxruntime as ort

            session, error = _load_cleanly(ort.InferenceSession, path, None, ["CPUExecutionProvider"])
            predict = (lambda s: lambda rows: s.run(["probabilities"], onnx_inputs(rows))[0][:, 1])(session)
        else:
            model, error = _load_cleanly(joblib.load, path)
            predict = (lambda m: lambda rows: m.predict_proba(rows)[:, 1])(model)
        result: ArtifactResult = {"loads_cleanly": error is None, "error": error}
        if error is None:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                try:
                    result["proba"] = [float(p) for p in predict(x)]
                except Exception as exc:  # a failure to predict is a verification result
                    result["loads_cleanly"], result["error"] = False, f"{type(exc).__name__}: {exc}"
        artifacts[name] = result
    loaded = BundleFiles.MODEL in artifacts and artifacts[BundleFiles.MODEL]["loads_cleanly"]
    return {
        "versions": installed_versions(REPORTED_PACKAGES),
        "artifacts": artifacts,
        "global_importance": global_importance(request, x, loaded),
    }


IMPORTANCE_ROWS = 1_000  # hold-out rows the global view averages over (more add time, not information)


def global_importance(request: dict, rows: pd.DataFrame, loaded: bool) -> GlobalImportance:
    """The bundle's global view: `{"columns": {column: mean |contribution|}, "rows": n}` with the exact per-request
    contributions /explain answers (serving/attribution.py), or `{"unavailable": why}`."""
    import joblib

    from fin_behavior.serving.attribution import Attributor, Unexplainable

    model_path = request["verify"].get(BundleFiles.MODEL)
    if model_path is None or not loaded:
        return {"unavailable": f"no {BundleFiles.MODEL} that loads cleanly to explain"}
    sample = rows.head(IMPORTANCE_ROWS)
    try:
        attributor = Attributor(joblib.load(model_path), list(FEATURES), request.get("environment", "?"))
        columns = attributor.global_importance({name: sample[name].tolist() for name in FEATURES})
    except Unexplainable as exc:
        return {"unavailable": str(exc)}
    except Exception as exc:  # the global view is evidence, not a gate: its failure is reported, not raised
        return {"unavailable": f"{type(exc).__name__}: {exc}"}
    return {"columns": columns, "rows": len(sample), "base_value": attributor.base_value}


def main(argv: list[str]) -> int:
    task, workdir = argv[0], Path(argv[1])
    try:
        payload = {"build": build, "verify": verify}[task](workdir)
    except Exception:  # the caller reads the reason from the file
        (workdir / f"{task}.error").write_text(traceback.format_exc())
        return 1
    (workdir / f"{task}.json").write_text(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
