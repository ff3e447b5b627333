"""A submitted model's explanations (serving/submitted_attribution.py) on real scikit-learn models, saved as a script's
mlflow.sklearn.log_model saves them, verified and made bundles by the platform's own code, and explained in a real
submission environment (built with shap, as every submission's is): contributions that add up to the model's own
output on its scale, one per input column, and a refusal naming the type for everything that is not explained
exactly. Through the served, confined endpoint: fin_behavior_tests/submissions/test_end_to_end.py."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fin_behavior.environments.spec import get_spec
from fin_behavior.settings import get_settings
from fin_behavior.submissions import pipeline, sandbox
from fin_behavior_tests.helpers import ENVS
from fin_behavior_tests.serving_fixtures import post, probe


@pytest.fixture(scope="module")
def submission_env():
    return sandbox.build_environment(get_settings(), ["scikit-learn"], ENVS)


def _probe(env, step: str, work) -> dict:
    command = [str(env.python), "-m", "fin_behavior_tests.serving.submitted_probe", step, str(work)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bundles(submission_env, tmp_path_factory) -> Path:
    """Each case's model made a bundle as a submission's is (verified, then its manifest written)."""
    work = tmp_path_factory.mktemp("submitted")
    for case, found in _probe(submission_env, "save", work).items():
        pipeline.write_manifest(work / case, submission_env, found, f"run-{case}")
    return work


@pytest.fixture(scope="module")
def explained(submission_env, bundles) -> dict:
    return _probe(submission_env, "explain", bundles)


def test_shap_is_installed_next_to_a_submission_s_requirements_unless_they_conflict_with_it(bundles, tmp_path):
    """At the local serving environment's pin (one place); requirements it conflicts with (shap needs tqdm 4.27 or
    later) get an environment without it rather than a failed submission, and its /explain says so (501)."""
    pinned = next(p for p in get_spec("local").packages if p.startswith("shap=="))
    assert pinned in sandbox.build_environment(get_settings(), ["scikit-learn"], ENVS).resolution.pins
    without = sandbox.build_environment(get_settings(), ["scikit-learn", "tqdm<4.27"], ENVS)
    assert "shap" not in without.resolution.versions() and without.resolution.versions()["tqdm"] < "4.27"
    replies, _ = probe(
        without, bundles / "forest_on_a_matrix", [post([{f"f{i}": 0.1 for i in range(6)}], path="/explain")], tmp_path
    )
    (refused,) = replies
    assert refused["status"] == 501 and "environment has no shap" in json.loads(refused["body"])["error"]


@pytest.mark.parametrize(
    ("case", "scale"),
    [
        ("forest_on_a_matrix", "probability"),
        ("logistic_pipeline_on_a_table", "log_odds"),
        ("boosted_classifier", "log_odds"),
        ("boosted_regressor", "prediction"),
        ("scaled_ridge_on_a_matrix", "prediction"),
    ],
)
def test_contributions_add_up_to_the_model_s_own_output_on_its_scale(explained, case, scale):
    answer = explained[case]
    assert answer.get("scale") == scale, answer.get("refusal")
    own, records = answer["own"], answer["records"]
    assert len(answer["rows"]) == len(records) == len(own["prediction"])
    for i, row in enumerate(answer["rows"]):
        assert list(row["contributions"]) == list(records[i])  # one per input column, in the order sent
        total = row["base_value"] + sum(row["contributions"].values())
        assert abs(total - own[scale][i]) <= 1e-6 * max(1.0, abs(own[scale][i])), (case, i, total, own[scale][i])
        assert row["answer"]["prediction"] == own["prediction"][i]  # what /score answers: the pyfunc's predict
        if scale != "prediction":
            assert row["answer"]["probability"] == pytest.approx(own["probability"][i], abs=1e-12)
        if scale == "log_odds":
            assert row["answer"]["log_odds"] == pytest.approx(own["log_odds"][i], abs=1e-9)
            assert 1 / (1 + math.exp(-row["answer"]["log_odds"])) == pytest.approx(row["answer"]["probability"])
    moved = np.array([[abs(v) for v in row["contributions"].values()] for row in answer["rows"]]).mean(axis=0)
    assert (moved > 0).sum() >= len(moved) // 2  # not zeros that add up by luck


def test_a_category_s_one_hot_parts_come_back_as_one_contribution_to_it(explained):
    """The logistic pipeline one-hot encodes `segment`: its parts are summed back to that column, so rows of the
    same segment get the same contribution for it (a linear model), different segments different ones."""
    answer = explained["logistic_pipeline_on_a_table"]
    segments = {record["segment"] for record in answer["records"]}
    assert len(segments) == 3
    by_segment: dict[str, set[float]] = {segment: set() for segment in segments}
    for row, record in zip(answer["rows"], answer["records"], strict=True):
        by_segment[record["segment"]].add(round(row["contributions"]["segment"], 12))
    assert all(len(values) == 1 for values in by_segment.values())  # a category's contribution is its own, whole
    assert len({values.pop() for values in by_segment.values()}) == 3  # and differs between categories


def test_a_linear_model_s_base_value_is_its_output_at_the_mean_of_its_input_example(explained):
    """Contributions of a linear model are coef * (x - reference), the reference the mean of the input example it
    was logged with (its 50 rows): the base value is the model's prediction there."""
    answer = explained["scaled_ridge_on_a_matrix"]
    (at_mean,) = answer["own"]["at_example_mean"]
    assert [row["base_value"] for row in answer["rows"]] == pytest.approx([at_mean] * len(answer["rows"]), abs=1e-9)


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("poisson_regressor", "do not add up to its prediction"),
        ("three_classes", "RandomForestClassifier has 3 classes"),
        ("pca_before_logistic", "(PCA) cannot say which input column"),
        ("neighbours", "KNeighborsClassifier (from sklearn.neighbors"),
        ("forest_of_its_own_class", "OwnForest (from __main__)"),
        ("forest_answering_probabilities", "its predict_proba (pyfunc_predict_fn)"),
        ("custom_pyfunc", "a custom MLflow pyfunc model (Custom)"),
    ],
)
def test_what_is_not_explained_exactly_is_refused_naming_the_model_s_type(explained, case, named):
    refusal = explained[case].get("refusal", "")
    assert named in refusal, explained[case]
