"""fairness.json: the fairness evidence of one trained version (written by ml/fairness.py), read by the
trained_model materialization, the model risk report and the tests. Standard library only: reading it must not
load what computing it needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fin_behavior.records import read_json, write_json

FAIRNESS_FILE = "fairness.json"
METRICS = ("base_rate", "selection_rate", "true_positive_rate", "false_positive_rate", "roc_auc")
MISSING_GROUP = "(missing)"


@dataclass(frozen=True)
class Figure:
    """A point estimate and its bootstrap 95% interval (None where a resample cannot define it)."""

    value: float | None
    low: float | None
    high: float | None

    def text(self, digits: int = 3) -> str:
        if self.value is None:
            return "n/a"
        interval = f" [{self.low:.{digits}f}, {self.high:.{digits}f}]" if self.low is not None else ""
        return f"{self.value:.{digits}f}{interval}"


@dataclass(frozen=True)
class Group:
    name: str
    rows: int
    positives: int
    judged: bool  # rows >= fairness_min_group_size
    metrics: dict[str, Figure]


@dataclass(frozen=True)
class Comparison:
    """A gate's figure for one attribute: between `low_group` and `high_group`, on `rate`."""

    value: float
    interval: Figure
    low_group: str
    high_group: str
    rate: str  # selection_rate, true_positive_rate or false_positive_rate
    established: bool  # the 95% interval lies wholly on the wrong side of the bar


@dataclass(frozen=True)
class AttributeFairness:
    attribute: str
    judged: bool  # in fairness_judged_attributes
    groups: list[Group]
    selection_rate_ratio: Comparison | None  # None: fewer than two groups of the minimum size
    equalized_odds_difference: Comparison | None


@dataclass(frozen=True)
class FairnessRecord:
    """fairness.json, beside the trained version: the figures its two fairness gates judged."""

    threshold: float  # the decision threshold the selections were made at
    rows: int
    min_group_size: int
    bootstrap_samples: int
    min_selection_rate_ratio: float
    max_equalized_odds_difference: float
    attributes: list[AttributeFairness] = field(default_factory=list)
    seconds: float = 0.0

    def write(self, directory: Path) -> Path:
        write_json(directory / FAIRNESS_FILE, asdict(self))
        return directory / FAIRNESS_FILE

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> FairnessRecord:
        def comparison(c: dict | None) -> Comparison | None:
            return None if c is None else Comparison(**(c | {"interval": Figure(**c["interval"])}))

        attributes = [
            AttributeFairness(
                a["attribute"],
                a["judged"],
                [Group(**(g | {"metrics": {k: Figure(**f) for k, f in g["metrics"].items()}})) for g in a["groups"]],
                comparison(a["selection_rate_ratio"]),
                comparison(a["equalized_odds_difference"]),
            )
            for a in payload["attributes"]
        ]
        return cls(**(payload | {"attributes": attributes}))

    @classmethod
    def read(cls, directory: Path) -> FairnessRecord:
        return cls.from_dict(read_json(directory / FAIRNESS_FILE))


def fairness_table(version_dir: Path) -> str:
    """The figures as a markdown table (the Dagster UI): one row per group, each figure with its interval."""
    if not (version_dir / FAIRNESS_FILE).is_file():
        return "no fairness evidence recorded for this version"
    record = FairnessRecord.read(version_dir)
    head = "| attribute | group | rows | judged | " + " | ".join(m.replace("_", " ") for m in METRICS) + " |"
    lines = [head, "|---|---|---:|---|" + "---:|" * len(METRICS)]
    for a in record.attributes:
        for g in a.groups:
            judged = "yes" if a.judged and g.judged else ("reported" if g.judged else "too small")
            cells = " | ".join(g.metrics[m].text() for m in METRICS)
            lines.append(f"| {a.attribute} | {g.name} | {g.rows} | {judged} | {cells} |")
    return (
        "\n".join(lines)
        + f"\n\nAt decision threshold {record.threshold}; 95% intervals from {record.bootstrap_samples} "
        "bootstrap resamples."
    )
