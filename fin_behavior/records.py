"""The typed records stages hand each other, each with one reader and one writer, and the evidence that
travels with every published version. Standard library only: the serving side reads these too.

Evidence is the platform's promise in data: a stage judges the version it publishes with its checks and
writes the verdicts beside it, "current" means the last version whose blocking checks all passed, and every
consumer (a later stage, a job, a sensor, the CLI, a deployment target) asks the evidence before it uses a
version. Dagster's blocking checks only stop the rest of one run; this holds for every run after it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from fin_behavior.outcome import Outcome

EVIDENCE_FILE = "evidence.json"
TRAINING_FILE = "training.json"


_BLOCK = 4 * 1024 * 1024
R = TypeVar("R", bound="_Record")  # typing.Self needs Python 3.11; Azure's sklearn-1.5 image has 3.10


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Atomically: a reader sees the old content or the new, never half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(partial, path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The content hash that names bundles, datasets and images (here: the serving side checks bundles too)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class _Record:
    """JSON round trip for a flat dataclass; unknown keys (written by a newer version) are ignored."""

    FILE: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[R], payload: dict[str, Any]) -> R:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in payload.items() if k in names})

    def write(self, directory: Path) -> Path:
        write_json(directory / self.FILE, self.to_dict())
        return directory / self.FILE

    @classmethod
    def read(cls: type[R], directory: Path) -> R:
        return cls.from_dict(read_json(directory / cls.FILE))


# Evidence ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One check's result on one version: the number next to its bar, and what to do when it misses."""

    check: str
    blocking: bool
    passed: bool
    actual: float | int | str
    threshold: float | int | str
    message: str


def _plain(value: Any) -> float | int | str:
    """numpy scalars as Python numbers, so the JSON holds numbers."""
    return value.item() if hasattr(value, "item") else value


class NotApprovedError(RuntimeError):
    """A version without passing evidence was about to be used; the message names the check and its number."""


@dataclass(frozen=True)
class Evidence(_Record):
    FILE = EVIDENCE_FILE

    stage: str
    version: str
    verdicts: list[Verdict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Evidence:
        return cls(payload["stage"], payload["version"], [Verdict(**v) for v in payload.get("verdicts", [])])

    @property
    def approved(self) -> bool:
        """Every blocking check ran and passed (a version with no blocking verdict is not approved)."""
        blocking = [v for v in self.verdicts if v.blocking]
        return bool(blocking) and all(v.passed for v in blocking)

    @property
    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.blocking and not v.passed]

    def summary(self) -> str:
        if self.approved:
            return f"{self.stage} {self.version}: every blocking check passed"
        failed = self.failures or [Verdict("blocking checks", True, False, "none", "all", "none ran")]
        return f"{self.stage} {self.version} failed " + "; ".join(
            f"{v.check} ({v.actual} vs {v.threshold}: {v.message})" for v in failed
        )

    @classmethod
    def judge(
        cls, stage: str, version: str, checks: dict[str, tuple[bool, str]], outcomes: dict[str, Outcome]
    ) -> Evidence:
        """The verdicts of `checks` (name -> (blocking, description)) from their outcomes."""
        return cls(
            stage,
            version,
            [
                Verdict(name, blocking, bool(o.passed), _plain(o.actual), _plain(o.threshold), o.message)
                for name, (blocking, _) in checks.items()
                for o in [outcomes[name]]
            ],
        )

    def require(self, what_to_do: str) -> None:
        """Raise NotApprovedError unless approved: the one gate every consumer of a version goes through."""
        if not self.approved:
            raise NotApprovedError(f"{self.summary()}. It will not be used. {what_to_do}")


# Stage records -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRecord(_Record):
    """What trained_model publishes beside the pipeline: how it was trained and how it scored."""

    FILE = TRAINING_FILE

    version: str
    data_version: str  # the processed_dataset version it was trained on
    decision_threshold: float  # probability at or above which the model answers 1, chosen out of fold
    metrics: dict[str, float]  # hold-out metrics (at the decision threshold) and their majority baselines
    latency: dict[str, float]  # in-process single-row predict_proba, ms
    best_params: dict[str, Any]
    best_cv_roc_auc: float
    training: dict[str, Any]  # the training settings the version is a function of
    package_versions: dict[str, str]  # MODEL_PACKAGES (and python) where it was trained
    mlflow_run_id: str
    mlflow_experiment_id: str
    mlflow_model_uri: str
    mlflow_tracking_uri: str
    search_seconds: float
    fit_seconds: float

    @property
    def random_state(self) -> int:
        return int(self.training["random_state"])


@dataclass(frozen=True)
class DataRecord(_Record):
    """What processed_dataset publishes beside the rows (data.json): where they came from and what was set aside,
    as first published (the version is the rows' content: the same rows from another file reuse it)."""

    FILE = "data.json"

    raw_rows: int
    rows: int
    quarantined_rows: int
    problems_by_column: dict[str, int]  # quarantined rows per column that failed validation
    target: str
    target_definition: str
    positive_rate: float


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: str  # "float" or "string"
    categories: list[str] | None = None  # the values the model was trained on (others are scored as unknown)


@dataclass(frozen=True)
class ModelInfo(_Record):
    """The bundle's manifest (model_info.json): what it is, where it was verified, and the sha256 of every
    other file in the bundle. The serving side refuses a bundle with a file this does not list."""

    FILE = "model_info.json"

    serving_environment: str
    runtime: str  # "onnx", "sklearn", or "pyfunc" (a submitted script's MLflow model)
    environment_fingerprint: str
    package_versions: dict[str, str]  # in the serving environment
    training_package_versions: dict[str, str]
    refit_in_serving_environment: bool
    features: list[FeatureSpec]
    target: str
    decision_threshold: float
    trained_model_version: str
    data_version: str
    built_at: str
    sha256: dict[str, str]  # file name -> digest, for every file in the bundle but this one
    # serving/features.py definition_id() of the code that derived its training features ("": none recorded,
    # e.g. a submitted model): raw records are scored only by a service whose derivation has the same id
    feature_definition: str = ""
    # The inputs the model reads (None: all of `features`); the others are accepted and not used, e.g. a protected
    # attribute kept for monitoring and fairness (settings protected_attributes / protected_features).
    model_features: list[str] | None = None

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ModelInfo:
        features = [FeatureSpec(**f) for f in payload["features"]]
        return super().from_dict(payload | {"features": features})

    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def digest(self) -> str:
        """One hash for the bundle's content (the registry's `bundle_sha256` tag): of every file's sha256."""
        return hashlib.sha256(json.dumps(self.sha256, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class BatchSummary(_Record):
    """What one batch scoring run did (batch.py writes it as summary.json beside the scores)."""

    FILE = "summary.json"

    batch_id: str
    source: str
    model_version: str
    feature_definition: str
    rows: int
    scored: int
    quarantined: int
    decision_rate: float  # share of the scored rows decided 1
    seconds: float
    rows_per_second: float
    scores: str
    quarantine: str  # "" when no row was quarantined
    problems_by_column: dict[str, int] = field(default_factory=dict)
    finished_at: str = ""


class BundleFiles:
    """The names of the files in a compatible bundle, in one place."""

    MODEL = "model.joblib"  # the pipeline, pickled by the serving environment's scikit-learn
    ONNX = "model.onnx"  # the same pipeline for the onnx runtime
    MLFLOW_MODEL = "model/MLmodel"  # a submitted script's MLflow model (runtime "pyfunc"), in model/
    EXPECTED = "expected.json"  # hold-out records and the probabilities verified for them
    PROFILE = "reference_profile.json"  # what the monitor compares this version's traffic with
    ENVIRONMENT = "environment.json"  # the exact environment it was verified in: any machine builds the same
    IMPORTANCE = "global_importance.json"  # mean |exact contribution| per column on the hold-out (attribution.py)
    INFO = ModelInfo.FILE

    @staticmethod
    def served(runtime: str) -> str:
        return {"onnx": BundleFiles.ONNX, "pyfunc": BundleFiles.MLFLOW_MODEL}.get(runtime, BundleFiles.MODEL)
