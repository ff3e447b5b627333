"""A verified model bundle: every artifact's sha256 is checked against model_info.json before it is loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fin_behavior.data.fingerprint import sha256_file


class BundleError(RuntimeError):
    """The bundle cannot be served; the message names the file and what is wrong with it."""


@dataclass
class Bundle:
    info: dict[str, Any]
    runtime: str
    _model: Any

    @property
    def features(self) -> list[dict[str, Any]]:
        return self.info["features"]

    def __post_init__(self) -> None:
        self._onnx_inputs = [(f["name"], np.float32 if f["dtype"] == "float" else object) for f in self.features]

    def predict_proba(self, columns: dict[str, list]) -> np.ndarray:
        """Probability of HighAmount for each row; `columns` maps every feature to its values."""
        if self.runtime == "onnx":
            inputs = {name: np.array(columns[name], dtype=dtype).reshape(-1, 1) for name, dtype in self._onnx_inputs}
            return self._model.run(["probabilities"], inputs)[0][:, 1]
        import pandas as pd

        return self._model.predict_proba(pd.DataFrame(columns))[:, 1]


def load_bundle(directory: Path) -> Bundle:
    info_path = directory / "model_info.json"
    try:
        info = json.loads(info_path.read_text())
        expected = info["sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{info_path} is missing or unreadable ({exc}); not serving this bundle") from None
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{path} is listed in model_info.json but missing; not serving this bundle")
        actual = sha256_file(path)
        if actual != digest:
            raise BundleError(
                f"{path} does not match model_info.json (sha256 {actual[:12]}..., expected {digest[:12]}...): "
                "the file was modified or truncated; not serving this bundle"
            )
    runtime = info["runtime"]
    if runtime == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one request is tiny; threads only add hand-off latency
        model = ort.InferenceSession(str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"])
    else:
        import joblib

        model = joblib.load(directory / "model.joblib")
    return Bundle(info=info, runtime=runtime, _model=model)
