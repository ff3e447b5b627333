"""The `fin-behavior` command. Light on purpose: each subcommand imports only what it needs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _generate_data(args: argparse.Namespace) -> int:
    from fin_behavior.data.generate import generate_csv

    path = generate_csv(args.out, rows=args.rows, seed=args.seed)
    print(f"wrote {args.rows} rows to {path}")
    return 0


def _verify_env(args: argparse.Namespace) -> int:
    from fin_behavior.environments.builder import EnvironmentBuildError
    from fin_behavior.environments.spec import EnvironmentSpecError
    from fin_behavior.environments.verify import current_model_info, environment_report
    from fin_behavior.settings import get_settings

    settings = get_settings()
    try:
        report = environment_report(settings, current_model_info(settings))
    except (EnvironmentBuildError, EnvironmentSpecError) as exc:
        print(f"fin-behavior verify-env: error: {exc}", file=sys.stderr)
        return 2
    print(f"serving environment: {settings.serving_environment}\n")
    print(report.render())
    return 0 if report.ok else 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fin-behavior", description="Financial Behavior Insights platform tools")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser(
        "generate-data", help="write synthetic transactions in the Kaggle banking layout (deterministic per seed)"
    )
    generate.add_argument("--rows", type=_positive_int, default=5_000, help="number of rows (default 5000)")
    generate.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    generate.add_argument("--out", required=True, help="CSV path to write (parent folders are created)")
    generate.set_defaults(handler=_generate_data)
    verify = commands.add_parser(
        "verify-env",
        help="compare project pins, the training environment, the current compatible model and the serving "
        "environment spec; exit 1 on any mismatch, with the command that fixes it",
    )
    verify.set_defaults(handler=_verify_env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (OSError, ValueError) as exc:
        print(f"fin-behavior {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
