"""Submitted models explained by the explanation worker's own code, in process, inside a submission's environment
(MLflow, scikit-learn, shap). Run by the tests (test_submitted_explain.py) in two steps:

    <submission env>/bin/python -m fin_behavior_tests.serving.submitted_probe save WORK
        each case's real scikit-learn model fitted and saved as a script's mlflow.sklearn.log_model saves it, into
        WORK/<case>/model, and verified by the platform's verification code (submissions/verify.py); prints
        {case: what verification found}, and writes rows to explain beside it (WORK/<case>.rows.json)
    <submission env>/bin/python -m fin_behavior_tests.serving.submitted_probe explain WORK
        (after the test made each WORK/<case> a bundle) each bundle loaded and its rows explained by
        SubmittedAttributor; prints {case: {"refusal"} or {"scale", "rows", "own"}}, where `own` is what the
        scikit-learn model itself answers for the rows (predict, predict_proba, decision_function), for the test
        to hold the contributions against.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fin_behavior.serving.attribution import Unexplainable
from fin_behavior.serving.submitted_attribution import SubmittedAttributor
from fin_behavior.submissions import verify

ROWS = 40  # explained per case, none of them the input example's


class OwnForest(RandomForestClassifier):
    """A forest class of the script's own: its predict could be anything."""


class Custom(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0.0] * len(model_input)


def _matrix(classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=classes, random_state=3)


def _table() -> tuple[pd.DataFrame, np.ndarray]:
    """Numbers and a category, the category carrying part of the signal."""
    x, y = _matrix()
    frame = pd.DataFrame(x, columns=[f"n{i}" for i in range(x.shape[1])])
    frame["segment"] = np.where(y == 1, np.where(x[:, 0] > 0, "gold", "silver"), np.where(x[:, 1] > 0, "silver", "tin"))
    return frame, y


def _regression() -> tuple[pd.DataFrame, np.ndarray]:
    x, y = make_regression(n_samples=300, n_features=5, noise=5.0, random_state=3)
    return pd.DataFrame(x, columns=[f"r{i}" for i in range(x.shape[1])]), y


def _cases() -> dict[str, tuple]:
    """case -> (the model, its training inputs, its input example's size, MLflow's pyfunc_predict_fn)."""
    x, y = _matrix()
    table, ty = _table()
    numbers = table.iloc[:, :6]
    encode = ColumnTransformer([("num", StandardScaler(), list(numbers)), ("cat", OneHotEncoder(), ["segment"])])
    rx, ry = _regression()
    three_x, three_y = _matrix(classes=3)
    scaled_ridge = make_pipeline(StandardScaler(), Ridge()).fit(rx.to_numpy(), ry)
    return {
        "forest_on_a_matrix": (RandomForestClassifier(60, random_state=0).fit(x, y), x, 5, None),
        "logistic_pipeline_on_a_table": (make_pipeline(encode, LogisticRegression()).fit(table, ty), table, 100, None),
        "boosted_classifier": (GradientBoostingClassifier(random_state=0).fit(numbers, ty), numbers, 5, None),
        "boosted_regressor": (GradientBoostingRegressor(random_state=0).fit(rx, ry), rx, 5, None),
        "scaled_ridge_on_a_matrix": (scaled_ridge, rx.to_numpy(), 50, None),
        "poisson_regressor": (HistGradientBoostingRegressor(loss="poisson").fit(rx, np.exp(ry / 100)), rx, 5, None),
        "three_classes": (RandomForestClassifier(20, random_state=0).fit(three_x, three_y), three_x, 5, None),
        "pca_before_logistic": (make_pipeline(PCA(3), LogisticRegression()).fit(x, y), x, 5, None),
        "neighbours": (KNeighborsClassifier().fit(x, y), x, 5, None),
        "forest_of_its_own_class": (OwnForest(10, random_state=0).fit(x, y), x, 5, None),
        "forest_answering_probabilities": (RandomForestClassifier(10, random_state=0).fit(x, y), x, 5, "predict_proba"),
        "custom_pyfunc": (Custom(), table, 5, None),
    }


def save(work: Path) -> dict:
    found = {}
    for case, (model, inputs, example, predict_fn) in _cases().items():
        model_dir = work / case / "model"
        given = {"input_example": inputs[:example], "pip_requirements": []}  # inferring them takes seconds a model
        if isinstance(model, mlflow.pyfunc.PythonModel):
            mlflow.pyfunc.save_model(model_dir, python_model=model, **given)
        else:
            given |= {"pyfunc_predict_fn": predict_fn} if predict_fn else {}
            mlflow.sklearn.save_model(model, model_dir, serialization_format="cloudpickle", **given)
        described = verify.describe(str(model_dir))
        described["predictions"] = verify.score(str(model_dir), described)
        found[case] = described
        rows = inputs[-ROWS:]  # past the example: rows the explainer has not seen
        names = [f["name"] for f in described["features"]]
        tensor = not hasattr(rows, "to_dict")
        records = [dict(zip(names, map(float, r), strict=True)) for r in rows] if tensor else rows.to_dict("records")
        (work / f"{case}.rows.json").write_text(json.dumps(records))
    return found


def explain(work: Path) -> dict:
    answers = {}
    for case in _cases():
        bundle_dir, records = work / case, json.loads((work / f"{case}.rows.json").read_text())
        try:
            attributor = SubmittedAttributor.load(bundle_dir)
        except Unexplainable as exc:
            answers[case] = {"refusal": str(exc)}
            continue
        columns = attributor.bundle.schema.parse(records, len(records)).columns
        rows = [
            {"base_value": a.base_value, "contributions": a.contributions, "answer": a.answer}
            for a in attributor.explain(columns)
        ]
        own = _own(attributor, columns, bundle_dir)
        answers[case] = {"scale": attributor.scale, "records": records, "rows": rows, "own": own}
    return answers


def _own(attributor: SubmittedAttributor, columns: dict, bundle_dir: Path) -> dict[str, list]:
    """What the scikit-learn model answers by itself, loaded as MLflow's sklearn flavor loads it; for a model of
    numbers only, also its prediction at the mean of its input example."""
    model, bundle = mlflow.sklearn.load_model(str(bundle_dir / "model")), attributor.bundle
    model_input = bundle.model_input(columns)
    own = {"prediction": np.asarray(model.predict(model_input)).tolist()}
    example = json.loads((bundle_dir / "expected.json").read_text())["records"]
    example_input = bundle.model_input(bundle.schema.parse(example, len(example)).columns)
    if bundle.info.target == "tensor":
        own["at_example_mean"] = model.predict(np.asarray(example_input).mean(axis=0, keepdims=True)).tolist()
    if hasattr(model, "predict_proba"):
        own["probability"] = model.predict_proba(model_input)[:, -1].tolist()
    if hasattr(model, "decision_function"):
        own["log_odds"] = np.ravel(model.decision_function(model_input)).tolist()
    return own


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # MLflow's and scikit-learn's notices are not the answer
    step, directory = sys.argv[1], Path(sys.argv[2])
    print(json.dumps(save(directory) if step == "save" else explain(directory)))
