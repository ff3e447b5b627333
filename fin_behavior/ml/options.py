"""What a training run is asked to do: the search space and the options. Light (no scikit-learn, scipy or
pandas), so the trained_model stage can name the version these options make, and find it already trained,
without importing what training needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fin_behavior.data.columns import FEATURES

if TYPE_CHECKING:  # serving environments import build_pipeline (train.py, which imports this) and have no pydantic
    from fin_behavior.settings import Settings


@dataclass(frozen=True)
class SearchSpace:
    """Inclusive ranges, as in the seeds."""

    n_estimators: tuple[int, int]
    max_depth: tuple[int, int]
    min_samples_split: tuple[int, int]
    min_samples_leaf: tuple[int, int]
    bootstrap: tuple[bool, ...]
    class_weight: tuple[str | None, ...]

    def distributions(self) -> dict[str, Any]:
        from scipy.stats import randint

        ints = ("n_estimators", "max_depth", "min_samples_split", "min_samples_leaf")
        dists: dict[str, Any] = {f"clf__{n}": randint(getattr(self, n)[0], getattr(self, n)[1] + 1) for n in ints}
        dists["clf__bootstrap"] = list(self.bootstrap)
        dists["clf__class_weight"] = list(self.class_weight)
        return dists

    def describe(self) -> dict[str, Any]:
        return {name: list(value) for name, value in self.__dict__.items()}


@dataclass(frozen=True)
class TrainingOptions:
    n_iter: int
    cv: int
    test_size: float
    random_state: int
    search_max_rows: int
    space: SearchSpace
    features: tuple[str, ...] = FEATURES  # the model's input columns (model_features: without excluded protected ones)
    n_jobs: int = -1  # all cores while fitting; the shipped forest scores single-threaded (see fit_final)

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainingOptions:
        space = SearchSpace(
            settings.n_estimators,
            settings.max_depth,
            settings.min_samples_split,
            settings.min_samples_leaf,
            settings.bootstrap,
            tuple(None if weight == "none" else weight for weight in settings.class_weight),
        )
        return cls(
            settings.n_iter,
            settings.cv,
            settings.test_size,
            settings.random_state,
            settings.search_max_rows,
            space,
            model_features(settings),
        )

    def describe(self) -> dict[str, Any]:
        """What the trained model is a function of (besides the data and the library): part of its version."""
        return {
            "n_iter": self.n_iter,
            "cv": self.cv,
            "test_size": self.test_size,
            "random_state": self.random_state,
            "search_max_rows": self.search_max_rows,
            **self.space.describe(),
            "features": list(self.features),
        }


def model_features(settings: Settings) -> tuple[str, ...]:
    """The processed dataset's features the model may read: all but the protected attributes it may not use as
    features (`protected_attributes` minus `protected_features`). A selection of input columns, not a rewrite
    of the data: the dataset keeps them (fairness needs them) and the service still accepts them."""
    excluded = set(settings.protected_attributes) - set(settings.protected_features)
    return tuple(name for name in FEATURES if name not in excluded)
