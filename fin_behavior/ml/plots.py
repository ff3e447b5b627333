"""Evaluation plots as PNG files: ROC, precision-recall, confusion matrix, calibration, feature importances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline


def figure():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(5, 4), dpi=100)


def save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def feature_importances(pipeline: Pipeline) -> pd.Series:
    """Impurity importances summed back onto the business-form features (one-hot columns folded)."""
    names = pipeline.named_steps["features"].get_feature_names_out()
    raw = pd.Series(pipeline.named_steps["clf"].feature_importances_, index=names)
    original = [n.split("__", 1)[1] for n in names]
    categorical = pipeline.named_steps["features"].transformers_[1][2]
    folded = [next((c for c in categorical if o.startswith(f"{c}_")), o) for o in original]
    return raw.groupby(folded).sum().sort_values(ascending=False)


def global_importance_bars(columns: dict[str, float], path: Path, rows: int) -> Path:
    """The version's global view: mean |exact contribution| to the probability per column, largest on top."""
    plt, fig, ax = figure()
    names = list(columns)[:15][::-1]
    ax.barh(names, [columns[n] for n in names])
    ax.set_xlabel("mean |contribution| to the probability")
    ax.set_title(f"Global importance (exact tree SHAP, {rows} hold-out rows)")
    ax.tick_params(axis="y", labelsize=7)
    return save(plt, fig, path)


def write_evaluation_plots(
    pipeline: Pipeline, y_true: pd.Series, proba: np.ndarray, threshold: float, out_dir: Path
) -> dict[str, Path]:
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    plt, fig, ax = figure()
    RocCurveDisplay.from_predictions(y_true, proba, ax=ax, name="model", plot_chance_level=True)
    ax.set_title("ROC curve (hold-out)")
    paths["roc_curve"] = save(plt, fig, out_dir / "roc_curve.png")

    plt, fig, ax = figure()
    PrecisionRecallDisplay.from_predictions(y_true, proba, ax=ax, name="model", plot_chance_level=True)
    ax.set_title("Precision-recall (hold-out)")
    paths["precision_recall_curve"] = save(plt, fig, out_dir / "precision_recall_curve.png")

    plt, fig, ax = figure()
    ConfusionMatrixDisplay.from_predictions(y_true, (proba >= threshold).astype(int), ax=ax, colorbar=False)
    ax.set_title(f"Confusion matrix (decision threshold {threshold:.3f})")
    paths["confusion_matrix"] = save(plt, fig, out_dir / "confusion_matrix.png")

    plt, fig, ax = figure()
    CalibrationDisplay.from_predictions(y_true, proba, n_bins=10, strategy="quantile", ax=ax, name="model")
    ax.set_title("Calibration (hold-out, deciles of probability)")
    paths["calibration"] = save(plt, fig, out_dir / "calibration.png")

    plt, fig, ax = figure()
    feature_importances(pipeline).head(15).iloc[::-1].plot.barh(ax=ax)
    ax.set_title("Feature importances (top 15)")
    paths["feature_importances"] = save(plt, fig, out_dir / "feature_importances.png")
    return paths
