"""Argument types and the help formatter shared by every command.

Each type raises `argparse.ArgumentTypeError`, which argparse turns into one line
`error: argument --flag: must be ...` and exit code 2.
"""

from __future__ import annotations

import argparse
import math

from gatescope import pretrained, threads


def _number(text: str, kind: type, what: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(text, int, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a positive number")
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"must be a positive number (finite), got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text, float, "a number >= 0")
    if not (0 <= value < math.inf):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = _number(text, float, "a number in (0, 1)")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return value


def thread_count(text: str) -> int:
    """A positive integer, or "all" (every core this process may use)."""
    try:
        return threads.parse_threads(text, "it")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or 'all', got {text!r}"
        ) from None


def add_threads_argument(
    parser: argparse.ArgumentParser,
    help: str,
    dest: str = "threads",
    also: str = "",
    default: object = None,
) -> None:
    """--threads N|all: NumPy's BLAS threads (`default` when not given: the command then
    takes `gatescope.threads.default_threads()`); the help names where that count comes
    from (`also` first)."""
    source = f"{also}{threads.THREADS_ENV[0]}, else {threads.DEFAULT_THREADS}"
    parser.add_argument(
        "--threads", type=thread_count, metavar="N|all", dest=dest, default=default,
        help=f"{help} (default: {source})",
    )  # fmt: skip


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one (for None the help text says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == "":
            return action.help
        return super()._get_help_string(action)


def add_checkpoint_or_pretrained(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """A positional CKPT that `--pretrained [NAME]` may replace (see `checkpoint_or_pretrained`)."""
    parser.add_argument("checkpoint", nargs="?", metavar="CKPT", help=help)
    parser.add_argument(
        "--pretrained",
        nargs="?",
        const=pretrained.DEFAULT,
        choices=pretrained.NAMES,
        metavar="NAME",
        help=f"instead of CKPT, the char LM shipped with gatescope (NAME: "
        f"{', '.join(pretrained.NAMES)}; default {pretrained.DEFAULT})",
    )


def checkpoint_or_pretrained(args: argparse.Namespace) -> str:
    """The file named by CKPT or --pretrained; exactly one of them must be given."""
    from . import CLIError  # here: the package's __init__ imports this module

    if args.pretrained and args.checkpoint:
        raise CLIError("give a checkpoint CKPT or --pretrained, not both")
    if args.pretrained:
        return str(pretrained.path(args.pretrained))
    if not args.checkpoint:
        raise CLIError(
            "give a checkpoint CKPT, or --pretrained for the model shipped with gatescope"
        )
    return args.checkpoint


def add_task_arguments(parser: argparse.ArgumentParser, help: str) -> None:
    """--task NAME and --length T: the task a model from elsewhere (.onnx, .keras) is for."""
    from gatescope.tasks import TASKS

    parser.add_argument("--task", choices=sorted(TASKS), help=help)
    parser.add_argument(
        "--length", type=positive_int, metavar="T", help="--task: its sequence length"
    )


def resume_overrides(args: argparse.Namespace) -> dict[str, int]:
    """The TrainConfig fields a `--resume` may change: --steps and --checkpoint-every."""
    names = ("steps", "checkpoint_every")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}
