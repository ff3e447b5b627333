"""The challenger verdict on simulations: how often a challenger whose true ROC-AUC is 0.05 higher is declared
better at the labelled rows the verdict asked for (target >= 80%), and how often an equal one is (target <= 5%).

    .venv/bin/python benchmarks/challenger_power.py [--runs 1000] [--samples 1000] [--prevalence 0.2 0.05]
        [--challenger-auc 0.80 0.75]

Each run (fin_behavior/monitoring/challenger_power.py): binormal scores with known ROC-AUCs (champion 0.75), the
two versions' noises correlated 0.6, a verdict on 400 labelled rows, then, when it asks for N more, a second verdict
on all 400 + N. The settings are the defaults (alpha 0.05, challenger_min_gain 0.05, challenger_power 0.9,
min_labelled_rows 200); each scenario at positive rates 0.2 and 0.05 (the bank's HighAmount target's rate).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from fin_behavior.monitoring.challenger import Rule
from fin_behavior.monitoring.challenger_power import Scenario, rates
from fin_behavior.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=get_settings().challenger_bootstrap_samples)
    parser.add_argument("--prevalence", type=float, nargs="+", default=[0.2, 0.05])
    parser.add_argument("--challenger-auc", type=float, nargs="+", default=[0.80, 0.75])
    args = parser.parse_args()
    rule = replace(Rule.of(get_settings()), samples=args.samples)
    print("| challenger ROC-AUC | positive rate | runs | declared better | at the first look | still not enough | "
          "median rows | s |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for prevalence in args.prevalence:
        for auc in args.challenger_auc:
            started = time.perf_counter()
            r = rates(Scenario(challenger_auc=auc, prevalence=prevalence), args.runs, rule, seed=10_000)
            print(
                f"| {auc:.2f} | {prevalence:g} | {r['runs']} | {r['better']:.1%} | {r['better_at_first_look']:.1%} | "
                f"{r['still_not_enough']:.1%} | {r['median_rows']:.0f} | {time.perf_counter() - started:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
