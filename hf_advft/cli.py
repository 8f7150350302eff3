"""The `hf-advft` command line: one sub-command per task, each registered by a `_add_<name>` function below.

A user's mistake (a `ValueError`, `TypeError`, `OSError` such as a missing folder, `ImportError` of an optional extra,
a malformed YAML file) ends the command with one line on stderr, `hf-advft <command>: error: ...`, and exit status 2;
`--debug` (anywhere on the command line) or `HF_ADVFT_DEBUG=1` shows the traceback instead. The recipes in
`recipes/` go through the same `run_guarded`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import yaml


# The exception types a user's input causes (wrong value, missing path or Hub repo, missing extra, bad YAML). Anything
# else (a RuntimeError such as CUDA out of memory, a bug) keeps its traceback.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, yaml.YAMLError)
DEBUG_FLAG, DEBUG_ENV = "--debug", "HF_ADVFT_DEBUG"


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
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"Show the traceback of an error (also: {DEBUG_ENV}=1). Accepted anywhere on the line.")
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


def _add_train(subparsers) -> None:
    from .train_command import add_train_command

    add_train_command(subparsers)


_COMMANDS.append(_add_train)


def _add_app(subparsers) -> None:
    from .app_ui import add_app_command  # gradio itself is imported only when the page starts

    add_app_command(subparsers)


_COMMANDS.append(_add_app)


def one_line(err: BaseException) -> str:
    """The message of `err` on one line (hints added on new lines are joined with spaces)."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text += f": {err.filename}"
    return text


def run_guarded(prog: str, fn: Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """Run `fn(argv)` (argv without `--debug`); a user error becomes one line on stderr and exit status 2.

    Returns `fn`'s exit code when it returns an `int`, else 0. With `--debug` in `argv` or `HF_ADVFT_DEBUG=1` in the
    environment, the exception propagates with its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")
    try:
        code = fn([a for a in argv if a != DEBUG_FLAG])
    except USER_ERRORS as err:
        if debug:
            raise
        sys.stderr.write(f"{prog}: error: {one_line(err)} (traceback: add {DEBUG_FLAG} or set {DEBUG_ENV}=1)\n")
        return 2
    return code if isinstance(code, int) else 0


def _dispatch(argv: list[str]) -> int:
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "takes_extra_args", False):  # `train` parses its own (many) flags: HfArgumentParser
        args.extra_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    return run_guarded(f"hf-advft {command}".strip(), _dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
