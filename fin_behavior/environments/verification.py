"""What the serving environment's tasks answer, and the verification report they become.

Inside a serving environment, fin_behavior/environments/serving_tasks.py answers `build` with a `BuildAnswer` and
`verify` with a `VerifyAnswer` (each a JSON file compatible.py's `_run_task` reads back). Outside, compatible.py's
`build_bundle` adds what the platform knows to the second and writes the result beside the bundle
(`verification.json`, `write_report`, its one writer); the checks, the compatible_model asset and the tests read it
through `read_report`, its one reader.

Typed so that every key has one spelling, checked by mypy where it is written and where it is read. Light (the
standard library only, as far back as Python 3.10): serving_tasks imports it inside the serving environments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict, cast

VERIFICATION = "verification.json"  # beside the bundle: every artifact's predictions in the serving environment


class _Loaded(TypedDict):
    loads_cleanly: bool  # loaded and predicted with warnings as errors
    error: str | None  # "Kind: message" when it did not


class ArtifactResult(_Loaded, total=False):  # (typing.NotRequired is newer than the Python 3.10 environments)
    """One artifact (the training pickle, the bundle's model, its ONNX graph) loaded and scored there."""

    proba: list[float]  # its hold-out probabilities, when it loaded


class GlobalImportance(TypedDict, total=False):
    """The bundle's global view: mean |contribution| per column over `rows` hold-out rows, or why there is none."""

    columns: dict[str, float]
    rows: int
    base_value: float
    unavailable: str


class FeatureParity(TypedDict):
    """The feature definition's features derived from the hold-out's raw records, against the trained ones."""

    rows: int
    mismatched: list[str]  # features that differ
    max_abs_diff: float
    definition: str  # the feature definition's id (serving/features.py)


class BuildAnswer(TypedDict):
    """`build`: whether the model was refit there, the categories its encoder knows, the packages it had."""

    refit: bool
    categories: dict[str, list[str]]
    versions: dict[str, str]


class VerifyAnswer(TypedDict):
    """`verify`: each artifact's result, the environment's packages, the global view."""

    versions: dict[str, str]
    artifacts: dict[str, ArtifactResult]  # by file name (BundleFiles), and "original_training_pickle"
    global_importance: GlobalImportance


class VerificationReport(VerifyAnswer):
    """The verify answer with what the platform adds: the build's facts, the hold-out labels, the feature parity
    (None: the dataset version holds no raw inputs)."""

    refit: bool
    categories: dict[str, list[str]]
    y_test: list[int]
    feature_parity: FeatureParity | None


def write_report(directory: Path, report: VerificationReport) -> None:
    (directory / VERIFICATION).write_text(json.dumps(report))


def read_report(directory: Path) -> VerificationReport:
    """The report as written; one of an earlier version (before raw records or the global view were verified)
    reads with no feature parity and no global view."""
    earlier: dict[str, Any] = {"feature_parity": None, "global_importance": {}}
    return cast(VerificationReport, earlier | json.loads((directory / VERIFICATION).read_text()))
