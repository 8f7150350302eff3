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


def _add_evaluate(subparsers) -> None:
    from .evaluate_command import add_evaluate_command

    add_evaluate_command(subparsers)


_COMMANDS.append(_add_evaluate)


def _add_card(subparsers) -> None:
    from .hub_commands import add_card_command

    add_card_command(subparsers)


def _add_push(subparsers) -> None:
    from .hub_commands import add_push_command

    add_push_command(subparsers)


_COMMANDS.extend([_add_card, _add_push])


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
