"""The `gatescope` command. The `cli` package is the only place that knows about argv,
files and exit codes; each command lives in its own module with two functions:

    register(sub)  -> adds its subparser(s) to `sub` and sets `handler=` via set_defaults
    handler(args)  -> does the work; returns an exit code (0 for success)

Errors the user can fix (bad values, missing files) are raised as `CLIError`, `ValueError`
or `OSError` and printed as one line `error: ...` on stderr with exit code 2, no traceback.

Every command runs with NumPy's BLAS on `gatescope --threads N|all` threads, else
GATESCOPE_THREADS (or its older name GATESCOPE_BLAS_THREADS), else
`gatescope.threads.DEFAULT_THREADS` (1), through `gatescope.threads.limit_blas_threads`: the
recurrent products are small (B x H by H x 4H), and on a busy machine extra BLAS threads
mostly wait for each other (a training step was 2-6x slower with OpenBLAS's default threads
on 2 busy cores). A command with its own --threads (`charlm train`) gets this count when
it is not given.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .args import add_threads_argument

# modules under gatescope.cli that contribute commands, in the order --help lists them
COMMAND_MODULES = (
    "demo",
    "train",
    "plot",
    "charlm",
    "cells",
    "explore",
    "sweep",
    "export",
    "patch",
    "seq2seq",
)


class CLIError(Exception):
    """A problem the user can fix; printed as `error: <message>`."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2, as argparse does
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gatescope",
        description="Train LSTM, GRU and vanilla RNNs in NumPy and look inside them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_threads_argument(  # SUPPRESS: the top-level formatter would print "(default: None)"
        parser, "NumPy's BLAS threads for the command", dest="blas_threads",
        default=argparse.SUPPRESS,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"gatescope.cli.{name}").register(sub)
    return parser


def _blas_threads(args: argparse.Namespace) -> int:
    """`gatescope --threads`, else the environment or the default (`gatescope.threads`)."""
    from gatescope.threads import default_threads

    n = getattr(args, "blas_threads", None) or default_threads()
    if getattr(args, "threads", 0) is None:  # a command's own --threads, not given
        args.threads = n
    return n


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    from gatescope.threads import limit_blas_threads

    try:
        with limit_blas_threads(_blas_threads(args)):
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
