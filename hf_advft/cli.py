"""The `hf-advft` command line: one sub-command per task, each registered by a `_add_<name>` function below."""

from __future__ import annotations

import argparse
import sys


def parse_fraction(text: str) -> float:
    """Parse `8/255`, `0.03` or `2` as a float (used for epsilon flags)."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError) as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 8/255") from err


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-advft", description="Adversarial fine-tuning tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


# Each entry adds one sub-command and sets `func` (called with the parsed namespace, returns an exit code).
_COMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
