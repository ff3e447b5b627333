"""Exact contributions for a submitted model (runtime "pyfunc": the MLflow model a user's script logged), computed in
the explanation worker (explain.py) of the model's own confined color, in the submission's environment. The model
is hostile code: it is loaded there only, bounded like the color it serves in, and what leaves the worker is plain
numbers and short text.

What is explained: the scikit-learn model MLflow's sklearn flavor holds (`PyFuncModel.get_raw_model()`: the estimator
mlflow.sklearn's wrapper predicts with), alone or as the last step of a Pipeline whose earlier steps say which input
column each feature they make comes from (`get_feature_names_out`: scalers, imputers, one-hot encoders, a
ColumnTransformer of them); the encoded parts of a column are summed back to it, as for the platform's model. The
estimator must be scikit-learn's own class (SUPPORTED), not a subclass:

- trees and tree ensembles: shap's TreeExplainer, path-dependent tree SHAP, which needs no data (each tree keeps how
  many training rows took each branch, so `base_value` is the mean output over the training data);
- linear models: shap's LinearExplainer, the exact closed form coef * (x - mean), against the input example the
  model was logged with (its mean is the reference point and `base_value` the output there; a model logged without
  an example has a made-up row of zeros, so its reference is 0).

The contributions add up exactly on the scale the model's output is additive in (its `scale`): a tree's or a
forest's probability of the second class in `classes_`, the log-odds of a gradient-boosted or logistic classifier
(whose probability is the logistic function of them), a regressor's prediction, which is what /score answered. Every
row is checked against the estimator's own output (ADDITIVITY), and the input example once, when the worker starts:
a model that does not add up (a regressor with a log link, for one) is refused, not explained approximately.
Anything else (a custom pyfunc, another flavor such as xgboost or keras, a multi-class classifier, preprocessing
that cannot be mapped back to input columns) is Unexplainable, naming the model's type: a 501."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fin_behavior.records import BundleFiles, read_json
from fin_behavior.serving.attribution import (
    LOG_ODDS,
    PREDICTION,
    PROBABILITY,
    Attribution,
    Unexplainable,
    base_value,
    import_shap,
    positive_class,
    source_column,
    summed_per_column,
    verified,
)
from fin_behavior.serving.bundle import Bundle, load_bundle
from fin_behavior.serving.validation import InputError

_TREE, _LINEAR = "tree", "linear"
# scikit-learn's estimator (by class name, in a sklearn module) -> (shap's explainer for it, its additive scale)
SUPPORTED: dict[str, tuple[str, str]] = {
    **dict.fromkeys(
        ("DecisionTreeClassifier", "ExtraTreeClassifier", "RandomForestClassifier", "ExtraTreesClassifier"),
        (_TREE, PROBABILITY),  # the trees' leaves hold class frequencies: probability is their (mean) sum
    ),
    **dict.fromkeys(("GradientBoostingClassifier", "HistGradientBoostingClassifier"), (_TREE, LOG_ODDS)),
    **dict.fromkeys(
        (
            "DecisionTreeRegressor",
            "ExtraTreeRegressor",
            "RandomForestRegressor",
            "ExtraTreesRegressor",
            "GradientBoostingRegressor",
            "HistGradientBoostingRegressor",
        ),
        (_TREE, PREDICTION),
    ),
    **dict.fromkeys(("LogisticRegression", "LogisticRegressionCV"), (_LINEAR, LOG_ODDS)),
    **dict.fromkeys(
        ("LinearRegression", "Ridge", "RidgeCV", "Lasso", "LassoCV", "ElasticNet", "ElasticNetCV"),
        (_LINEAR, PREDICTION),
    ),
}
COVERED = (
    "explanations cover scikit-learn's tree models (decision trees, random forests, extra trees, gradient boosting) "
    "and linear models (linear, ridge, lasso, elastic net and logistic regression) logged with mlflow.sklearn, alone "
    "or as the last step of a Pipeline"
)
PER_COLUMN = "contributions cannot be given per column (preprocessing that mixes columns is not explained)"
ADDITIVITY = 1e-6  # |base_value + sum(contributions) - output|, relative to outputs above 1
NO_SHAP = (
    "this submission's environment has no shap, which explanations need: the platform adds it next to a "
    "submission's requirements unless they conflict with it (shap needs numpy 2); resubmit with requirements "
    "that allow it"
)


class SubmittedAttributor:
    """A submitted model with its explainer, built once per worker process."""

    def __init__(self, bundle: Bundle, example: list[dict]):
        self.bundle = bundle
        self.features = bundle.info.feature_names()
        self.estimator, self.encode = _estimator_of(bundle.model)
        self.name = type(self.estimator).__name__
        explainer_kind, self.scale = _kind(self.estimator)
        self.groups = _groups(self.encode, self.features, self.estimator)
        shap = import_shap(NO_SHAP)
        try:
            example_columns = bundle.schema.parse(example, len(example)).columns
        except InputError as exc:
            raise Unexplainable(f"the model's input example cannot be read as its input: {exc.message}") from None
        # tree SHAP's own additivity check is skipped (ours, against the model's own output, follows every row)
        self._options = {"check_additivity": False} if explainer_kind == _TREE else {}
        try:
            if explainer_kind == _TREE:
                self.explainer = shap.TreeExplainer(self.estimator, feature_perturbation="tree_path_dependent")
            else:
                self.explainer = shap.LinearExplainer(self.estimator, self._encoded(example_columns)[1])
        except Exception as exc:  # shap names what it does not support
            raise Unexplainable(f"{self.name} cannot be explained exactly by shap: {str(exc)[:300]}") from None
        self.base_value = base_value(self.explainer)
        self.explain(example_columns)  # a model whose contributions do not add up is refused now, once

    @classmethod
    def load(cls, bundle_dir: Path) -> SubmittedAttributor:
        """The bundle's MLflow model (verified again by the process that loads it) and its input example."""
        return cls(verified(load_bundle, bundle_dir), read_json(bundle_dir / BundleFiles.EXPECTED)["records"])

    def explain(self, columns: dict[str, list]) -> list[Attribution]:
        """One Attribution per row of `columns`, with what the model answers for it: `prediction` (as /score
        answered it: the pyfunc's own predict), and for a classifier `probability` (and `log_odds`)."""
        predictions, _ = self.bundle.predict(columns)
        encoded, dense = self._encoded(columns)
        values = self.explainer.shap_values(dense, **self._options)
        per_column = summed_per_column(positive_class(values), self.groups, len(self.features))
        outputs = self._outputs(encoded, predictions)
        self._check_additive(per_column, outputs[self.scale])
        computed = {scale: output for scale, output in outputs.items() if scale != PREDICTION}
        return [
            Attribution(
                self.base_value,
                {name: float(v) for name, v in zip(self.features, row, strict=True)},
                {PREDICTION: predictions[i]} | {scale: float(output[i]) for scale, output in computed.items()},
            )
            for i, row in enumerate(per_column)
        ]

    def _encoded(self, columns: dict[str, list]) -> tuple[Any, np.ndarray]:
        """(what the estimator takes, the same as a float matrix for shap) for the rows of `columns`."""
        model_input = self.bundle.model_input(columns)
        encoded = model_input if self.encode is None else self.encode.transform(model_input)
        dense = np.asarray(encoded.toarray() if hasattr(encoded, "toarray") else encoded, dtype=float)
        if dense.ndim != 2 or dense.shape[1] != len(self.groups):
            made = dense.shape[-1]
            raise Unexplainable(f"the model's preprocessing made {made} features, expected {len(self.groups)}")
        return encoded, dense

    def _outputs(self, encoded: Any, predictions: list) -> dict[str, np.ndarray]:
        """The estimator's own outputs for the rows, by scale."""
        if self.scale == PREDICTION:
            try:
                return {PREDICTION: np.asarray(predictions, dtype=float)}
            except (TypeError, ValueError):
                raise Unexplainable(f"{self.name} predicted values that are not numbers") from None
        outputs = {PROBABILITY: np.asarray(self.estimator.predict_proba(encoded), dtype=float)[:, -1]}
        if self.scale == LOG_ODDS:
            outputs[LOG_ODDS] = np.ravel(np.asarray(self.estimator.decision_function(encoded), dtype=float))
        return outputs

    def _check_additive(self, per_column: np.ndarray, output: np.ndarray) -> None:
        if not (np.isfinite(per_column).all() and np.isfinite(output).all()):
            raise Unexplainable(f"{self.name} answered values that are not finite numbers: they cannot be explained")
        off = np.abs(self.base_value + per_column.sum(axis=1) - output)
        if (off > ADDITIVITY * np.maximum(1.0, np.abs(output))).any():
            raise Unexplainable(
                f"the contributions of {self.name} do not add up to its {self.scale.replace('_', '-')} (off by "
                f"{off.max():.3g}), so they are not exact: it is not explained (a regressor with a log link, for one)"
            )


def _sklearn(thing: Any, *names: str) -> bool:
    """`thing` is one of scikit-learn's own classes named `names` (not a subclass defined elsewhere)."""
    kind = type(thing)
    return kind.__module__.split(".")[0] == "sklearn" and kind.__name__ in names


def _estimator_of(model: Any) -> tuple[Any, Any]:
    """(the estimator, the Pipeline of the steps before it or None) of an MLflow PyFuncModel of the sklearn flavor."""
    flavor = model.metadata.flavors.get("python_function", {})
    loader = str(flavor.get("loader_module", ""))
    if loader != "mlflow.sklearn":
        raise Unexplainable(f"{_described(model, loader)} is not explained: {COVERED}")
    predict_fn = str(flavor.get("predict_fn", "predict"))
    if predict_fn != "predict":
        raise Unexplainable(
            f"the model answers /score with its {predict_fn[:40]} (pyfunc_predict_fn), not its predict: it is not "
            "explained; log it without pyfunc_predict_fn"
        )
    raw = model.get_raw_model()
    if not _sklearn(raw, "Pipeline"):
        return raw, None
    return raw.steps[-1][1], (raw[:-1] if len(raw.steps) > 1 else None)


def _described(model: Any, loader: str) -> str:
    """What a model that is not scikit-learn's is, by its type: for the 501 that refuses it."""
    if loader == "mlflow.pyfunc.model":
        return f"a custom MLflow pyfunc model ({type(model.unwrap_python_model()).__name__[:80]})"
    flavor = loader.removeprefix("mlflow.")[:40]
    try:
        return f"{type(model.get_raw_model()).__name__[:80]} (MLflow flavor {flavor})"
    except Exception:  # a flavor without get_raw_model
        return f"a model of MLflow flavor {flavor}"


def _kind(estimator: Any) -> tuple[str, str]:
    """(shap's explainer for the estimator, the scale its contributions add up in); Unexplainable if unsupported."""
    kind = type(estimator)
    if not _sklearn(estimator, *SUPPORTED):
        raise Unexplainable(f"{kind.__name__[:80]} (from {kind.__module__[:80]}) is not explained: {COVERED}")
    explainer, scale = SUPPORTED[kind.__name__]
    classes = getattr(estimator, "classes_", None)
    if scale != PREDICTION and (classes is None or len(classes) != 2):
        count = "an unknown number of" if classes is None else len(classes)
        raise Unexplainable(
            f"{kind.__name__} has {count} classes: a classifier is explained by the probability of its second class, "
            "so only binary classifiers are"
        )
    return explainer, scale


def _groups(encode: Any, features: list[str], estimator: Any) -> np.ndarray:
    """For each feature the estimator takes, the index (in `features`) of the input column it was made from."""
    index = {name: i for i, name in enumerate(features)}
    if encode is None:
        width = getattr(estimator, "n_features_in_", len(features))
        if width != len(features):
            name = type(estimator).__name__
            raise Unexplainable(f"{name} takes {width} features, the model's input has {len(features)}")
        return np.arange(len(features))
    steps = ", ".join(type(step).__name__[:40] for _, step in encode.steps)
    name = type(estimator).__name__
    cannot = f"the Pipeline's steps before {name} ({steps}) cannot say which input column each feature"
    # a step fitted on a table knows its columns' names; one fitted on a matrix is given them, in order
    given = None if hasattr(encode, "feature_names_in_") else features
    try:
        outputs = [str(name) for name in encode.get_feature_names_out(given)]
    except Exception as exc:
        raise Unexplainable(f"{cannot} they make comes from ({type(exc).__name__}): {PER_COLUMN}") from None
    prefixes = sorted(_transformer_prefixes(encode), key=len, reverse=True)
    groups = []
    for output in outputs:
        unprefixed = next((output.removeprefix(p) for p in prefixes if output.startswith(p)), output)
        try:
            groups.append(index[source_column(unprefixed, features)])
        except Unexplainable:
            raise Unexplainable(f"{cannot} they make comes from (one is {output[:80]!r}): {PER_COLUMN}") from None
    return np.asarray(groups, dtype=int)


def _transformer_prefixes(encode: Any) -> set[str]:
    """`<name>__`, which a ColumnTransformer puts before each output of its transformer `name` (its default
    verbose_feature_names_out)."""
    steps = [step for _, step in encode.steps] if hasattr(encode, "steps") else [encode]
    return {
        f"{name}__"
        for step in steps
        if hasattr(step, "transformers_") and getattr(step, "verbose_feature_names_out", False) is True
        for name, *_ in step.transformers_
    }
