"""Verification of a submitted model inside its own environment (run there as a task, isolated like the
script): the MLflow model loads with warnings as errors and scores its input example. Prints what it found as
JSON: the features (from the signature), the example's records and the model's predictions for them.

    <submission env>/bin/python -m fin_behavior.submissions.verify MODEL_DIR

Imports only MLflow, numpy and the standard library (what the submission's environment has)."""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from typing import Any

import numpy as np

NUMERIC = {"double", "float", "long", "integer", "boolean"}


def describe(model_dir: str) -> dict:
    from mlflow.models import Model

    model = Model.load(model_dir)
    signature = model.signature
    # Any: MLflow annotates `str | None`, but returns the example as logged (a DataFrame, an ndarray, ...)
    example: Any = model.load_input_example(model_dir) if signature is not None else None
    if signature is None or example is None:
        if "sklearn" in model.flavors:  # the seed's own `log_model(model, 'model')`: the estimator says its inputs
            return _from_estimator(model_dir)
        raise ValueError("the model has no signature and input example: log it with input_example=X[:5]")
    inputs = signature.inputs
    if inputs.is_tensor_spec():
        (spec,) = inputs.inputs
        width = spec.shape[-1] if len(spec.shape) == 2 else -1
        if width < 1:
            raise ValueError(f"a tensor input of shape {spec.shape} cannot be served as records: use a 2-D input")
        features = [{"name": f"f{i}", "dtype": "float"} for i in range(width)]
        rows = np.asarray(example, dtype=float).reshape(-1, width)
        records = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in rows]
        layout = "tensor"
    else:
        features = [
            {"name": c.name, "dtype": "float" if _type_name(c.type) in NUMERIC else "string"} for c in inputs.inputs
        ]
        frame = example if hasattr(example, "to_dict") else None
        if frame is None:
            raise ValueError("the input example is not a table matching the signature's columns")
        records = json.loads(frame.to_json(orient="records"))
        layout = "columns"
    return {"features": features, "records": records, "layout": layout}


def _from_estimator(model_dir: str) -> dict:
    """The inputs of a scikit-learn model logged with neither signature nor example, from the fitted estimator
    (`feature_names_in_` when it was fitted on a table, else `n_features_in_` numbers); its example, one row of
    zeros, is made up, and said so."""
    import mlflow.sklearn

    estimator = mlflow.sklearn.load_model(model_dir)
    names = [str(n) for n in getattr(estimator, "feature_names_in_", [])]
    width = len(names) or int(getattr(estimator, "n_features_in_", 0))
    if width < 1:
        raise ValueError("the model has no signature and its estimator does not say its inputs: log it with "
                         "input_example=X[:5]")  # fmt: skip
    layout = "columns" if names else "tensor"
    names = names or [f"f{i}" for i in range(width)]
    return {
        "features": [{"name": n, "dtype": "float"} for n in names],
        "records": [dict.fromkeys(names, 0.0)],
        "layout": layout,
        "example": "made up: one row of zeros (the model was logged without an input example)",
    }


def _type_name(kind: object) -> str:
    """A column type's name: `DataType.double` is an enum member whose str() is "DataType.double"."""
    return str(getattr(kind, "name", kind))


def score(model_dir: str, described: dict) -> list:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_dir)
    names = [f["name"] for f in described["features"]]
    if described["layout"] == "tensor":
        data = np.array([[r[n] for n in names] for r in described["records"]], dtype=float)
    else:
        import pandas as pd

        data = pd.DataFrame(described["records"], columns=names)
    predictions = np.asarray(model.predict(data))
    return predictions.reshape(len(predictions), -1)[:, 0].tolist() if predictions.ndim > 1 else predictions.tolist()


def main(model_dir: str) -> int:
    import mlflow.pyfunc  # noqa: F401  MLflow's own import-time warnings are not the model's
    from mlflow.models import Model  # noqa: F401

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a model that only loads with a warning is not served
            described = describe(model_dir)
            described["predictions"] = score(model_dir, described)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "details": traceback.format_exc()[-3000:]}))
        return 1
    print(json.dumps(described))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
