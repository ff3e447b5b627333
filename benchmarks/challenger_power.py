"""The challenger verdict on simulations: how often a challenger whose true ROC-AUC is 0.05 higher is declared
better at the labelled rows the verdict asked for (target >= 80%), and how often an equal one is (target <= 5%).

    taskset -c 1 .venv/bin/python benchmarks/challenger_power.py [--runs 20000] [--prevalence 0.2 0.05]
        [--challenger-auc 0.80 0.75] [--early-alpha A] [--power P]

Each run (fin_behavior/monitoring/challenger_power.py): binormal scores with known ROC-AUCs (champion 0.75), the
two versions' noises correlated 0.6; a verdict on 400 labelled rows, then, while it says "not enough data yet:
about N more", again on all the rows with the N added. The settings are the defaults (alpha 0.05, early_alpha 0.001,
challenger_min_gain 0.05, challenger_power 0.9, min_labelled_rows 200, challenger_min_class_rows 50); each
scenario at positive rates 0.2 and 0.05 (the bank's HighAmount target's rate). --early-alpha 0.05 shows what
testing every look at alpha does; --power 0.8 what the textbook power would find. The interval of a share is
Clopper-Pearson's at 95% (scipy).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from scipy.stats import binomtest

from fin_behavior.monitoring.challenger import Rule
from fin_behavior.monitoring.challenger_power import Scenario, rates
from fin_behavior.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--prevalence", type=float, nargs="+", default=[0.2, 0.05])
    parser.add_argument("--challenger-auc", type=float, nargs="+", default=[0.80, 0.75])
    parser.add_argument("--early-alpha", type=float, default=get_settings().challenger_early_alpha)
    parser.add_argument("--power", type=float, default=get_settings().challenger_power)
    args = parser.parse_args()
    rule = replace(Rule.of(get_settings()), early_alpha=args.early_alpha, power=args.power)
    print(f"{rule.procedure()}; power {rule.power:g} for a gain of {rule.min_gain:g}\n")
    print("| challenger ROC-AUC | positive rate | runs | declared better [95% interval] | better at an early look | "
          "declared worse | still not enough | median tested looks | median rows | s |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for prevalence in args.prevalence:
        for auc in args.challenger_auc:
            started = time.perf_counter()
            r = rates(Scenario(challenger_auc=auc, prevalence=prevalence), args.runs, rule, seed=10_000)
            low, high = binomtest(int(r["better_runs"]), int(r["runs"])).proportion_ci(0.95)
            print(
                f"| {auc:.2f} | {prevalence:g} | {r['runs']} | {r['better']:.1%} [{low:.1%}, {high:.1%}] | "
                f"{r['better_early']:.1%} | {r['worse']:.1%} | {r['still_not_enough']:.1%} | "
                f"{r['median_tested_looks']:.0f} | {r['median_rows']:.0f} | {time.perf_counter() - started:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
