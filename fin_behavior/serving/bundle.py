"""A verified model bundle. The bundle is verified as a whole before anything in it is loaded: every file
present must be listed in model_info.json with its sha256, every listed file must be present and match, and,
when the deployer names one, the manifest itself must hash to the digest the registry recorded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fin_behavior.records import BundleFiles, ModelInfo, sha256_file
from fin_behavior.serving.raw_records import RecordSchema, raw_refusal


class BundleError(RuntimeError):
    """The bundle cannot be served; the message names the file and what is wrong with it."""


def verify_bundle(directory: Path, expected_digest: str | None = None) -> ModelInfo:
    """The bundle's manifest, once every file is accounted for; BundleError naming the first problem."""
    info_path = directory / BundleFiles.INFO
    try:
        info = ModelInfo.read(directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{info_path} is missing or unreadable ({exc}); not serving this bundle") from None
    if expected_digest is not None and info.digest != expected_digest:
        raise BundleError(
            f"{info_path} does not match the registered bundle (digest {info.digest[:12]}..., registered "
            f"{expected_digest[:12]}...): the manifest was changed; not serving this bundle"
        )
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()} - {BundleFiles.INFO}
    unlisted = sorted(present - set(info.sha256))
    if unlisted:
        raise BundleError(
            f"{directory / unlisted[0]} is not listed in model_info.json ({len(unlisted)} unlisted file(s)): "
            "a bundle holds exactly what its manifest lists; not serving this bundle"
        )
    for name, digest in info.sha256.items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{path} is listed in model_info.json but missing; not serving this bundle")
        actual = sha256_file(path)
        if actual != digest:
            raise BundleError(
                f"{path} does not match model_info.json (sha256 {actual[:12]}..., expected {digest[:12]}...): "
                "the file was modified or truncated; not serving this bundle"
            )
    served = BundleFiles.served(info.runtime)
    if served not in info.sha256:
        raise BundleError(f"the {info.runtime} runtime serves {served}, which this bundle does not hold")
    return info


@dataclass
class Bundle:
    info: ModelInfo
    _model: Any

    @property
    def runtime(self) -> str:
        return self.info.runtime

    @property
    def model(self) -> Any:
        """What scores: an ONNX session, a scikit-learn Pipeline, or a submitted model's MLflow PyFuncModel."""
        return self._model

    def __post_init__(self) -> None:
        self.schema = RecordSchema(self.info.features, raw_refusal(self.info))
        self._onnx_inputs = [(f.name, np.float32 if f.dtype == "float" else object) for f in self.info.features]

    def predict(self, columns: dict[str, list]) -> tuple[list, list[float] | None]:
        """(predictions, probabilities of the positive class or None) for the rows in `columns` (every feature ->
        its values). The built-in model answers at its decision threshold; a submitted MLflow model answers
        what its own predict returns."""
        if self.runtime == "pyfunc":
            return _plain(self._model.predict(self.model_input(columns))), None
        if self.runtime == "onnx":
            inputs = {name: np.array(columns[name], dtype=dtype).reshape(-1, 1) for name, dtype in self._onnx_inputs}
            proba = self._model.run(["probabilities"], inputs)[0][:, 1]
        else:
            import pandas as pd

            proba = self._model.predict_proba(pd.DataFrame(columns))[:, 1]
        threshold = self.info.decision_threshold
        return [int(p >= threshold) for p in proba], [round(float(p), 6) for p in proba]

    def model_input(self, columns: dict[str, list]) -> Any:
        """A submitted model's input for the rows in `columns`: a table, or one float matrix (TENSOR_INPUT)."""
        if self.info.target == TENSOR_INPUT:  # a signature without column names: one float matrix
            return np.column_stack([np.asarray(columns[f.name], dtype=float) for f in self.info.features])
        import pandas as pd

        return pd.DataFrame(columns)


TENSOR_INPUT = "tensor"  # ModelInfo.target of a pyfunc model whose signature is one unnamed float matrix


def _plain(values: Any) -> list:
    """Model output as JSON-ready Python values."""
    array = np.asarray(values)
    return array.reshape(len(array), -1)[:, 0].tolist() if array.ndim > 1 else array.tolist()


def load_bundle(directory: Path, expected_digest: str | None = None) -> Bundle:
    info = verify_bundle(directory, expected_digest)
    if info.runtime == "pyfunc":
        import mlflow.pyfunc  # in a submission's own environment, where its model was trained

        return Bundle(info=info, _model=mlflow.pyfunc.load_model(str(directory / "model")))
    if info.runtime == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one request is tiny; threads only add hand-off latency
        model = ort.InferenceSession(str(directory / BundleFiles.ONNX), options, providers=["CPUExecutionProvider"])
    else:
        import joblib

        model = joblib.load(directory / BundleFiles.MODEL)
    return Bundle(info=info, _model=model)
