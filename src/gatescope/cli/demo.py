"""`gatescope demo`: train rnn, gru and lstm on the recall task and write a report.

gatescope demo                      # ./gatescope-demo/report.html, about two minutes
gatescope demo --out DIR --length 80
gatescope demo --update-bias 3      # the GRU with its forget bias: it solves recall too
gatescope demo --quick              # a tiny version (seconds), for tests
gatescope demo seq2seq              # dates with and without attention: ./gatescope-demo-seq2seq/
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from . import CLIError
from .args import positive_int

DEFAULT_OUT = "gatescope-demo"
SEQ2SEQ_OUT = "gatescope-demo-seq2seq"


def _length(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train rnn, gru and lstm on the recall task and write a report",
        description=(
            "Train a vanilla RNN, a GRU and an LSTM on the recall task (remember the first "
            "symbol of a noisy sequence), then measure and draw what happens inside: gates, "
            "states, the gradient flowing back through time, saturation. Writes PNG figures, "
            "summary.json, report.html (self-contained) and the three models into --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "which",
        nargs="?",
        choices=("memory", "seq2seq"),
        default="memory",
        help="memory: rnn, gru and lstm on recall; seq2seq: dates with and without attention "
        f"(into ./{SEQ2SEQ_OUT} unless --out)",
    )
    p.add_argument(
        "--out",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"output folder (default: {DEFAULT_OUT}; {SEQ2SEQ_OUT} for seq2seq)",
    )
    p.add_argument(
        "--length",
        type=_length,
        default=argparse.SUPPRESS,  # no "(default: None)" in --help
        metavar="T",
        help="steps per sequence (default 50; 12 with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="a tiny, fast version (for tests)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the data")
    p.add_argument(
        "--update-bias",
        type=float,
        default=0.0,
        metavar="B",
        help="the GRU's initial update-gate bias, its forget bias: 3 lets it solve recall",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    from gatescope.demo import DemoConfig, run_demo

    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if args.which == "seq2seq":
        return _seq2seq(args)
    args.out = getattr(args, "out", DEFAULT_OUT)
    length = getattr(args, "length", None)
    if args.quick:
        config = DemoConfig.quick(length=length or 12)
    else:
        config = DemoConfig(length=length or DemoConfig.length)
    if not math.isfinite(args.update_bias):
        raise CLIError(f"--update-bias must be a finite number, got {args.update_bias}")
    config = type(config)(
        **{**config.to_dict(), "seed": args.seed, "update_bias": args.update_bias}
    )
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out!r} exists and is not a folder")
    progress = not args.no_progress

    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    console = Console(highlight=False)

    def log(line: str) -> None:
        if progress:
            err.print(f"[dim]{line}[/dim]")

    command = "gatescope demo" + "".join(f" {a}" for a in sys.argv[2:] if sys.argv[1:2] == ["demo"])
    summary = run_demo(out, config, progress=progress, log=log, command=command)
    _print_table(console, summary)
    # soft_wrap: a long path stays on one line, whole, so it can be copied or clicked
    console.print(f"report: {os.path.join(out, 'report.html')}", soft_wrap=True, highlight=False)
    return 0


def _print_table(console, summary: dict) -> None:
    from rich.table import Table

    task = summary["task"]
    table = Table(
        title=f"recall, T = {task['length']} (chance {task['chance']:.1%})",
        title_justify="left",
    )
    for col, just in (
        ("model", "left"),
        ("params", "right"),
        ("steps", "right"),
        ("seconds", "right"),
        ("test accuracy", "right"),
        ("grad. 1st step / loss", "right"),
    ):
        table.add_column(col, justify=just)
    from gatescope.viz.style import ARCH_NAMES as names

    for arch in ("lstm", "gru", "rnn"):
        m = summary["models"][arch]
        ratio = summary["gradient_flow"][arch]["untrained"].get("h_ratio")
        acc = f"{m['test_accuracy']:.1%}" + (" solved" if m["solved"] else "")
        table.add_row(
            names[arch],
            f"{m['params']:,}",
            str(m["steps"]),
            f"{m['seconds']:.1f}",
            acc,
            "n/a" if ratio is None else f"{ratio:.1e}",
        )
    console.print(table)
    console.print(
        "[dim]grad. 1st step / loss: ||dL/dh|| at the symbol step over ||dL/dh|| at the loss, "
        "untrained (measured).[/dim]"
    )


def _seq2seq(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from gatescope.seq2seq_demo import ATTENTIONS, Seq2SeqDemoConfig, run_seq2seq_demo

    for flag, given in (("--length", hasattr(args, "length")), ("--update-bias", args.update_bias)):
        if given:
            raise CLIError(f"{flag} is an option of the memory demo, not of `demo seq2seq`")
    out = getattr(args, "out", SEQ2SEQ_OUT)
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out!r} exists and is not a folder")
    base = Seq2SeqDemoConfig.quick() if args.quick else Seq2SeqDemoConfig()
    config = type(base)(**{**base.to_dict(), "seed": args.seed})
    progress = not args.no_progress
    err = Console(stderr=True, highlight=False)
    console = Console(highlight=False)

    def log(line: str) -> None:
        if progress:
            err.print(f"[dim]{line}[/dim]")

    command = "gatescope" + "".join(f" {a}" for a in sys.argv[1:] if sys.argv[1:2] == ["demo"])
    summary = run_seq2seq_demo(out, config, progress=progress, log=log, command=command)
    n = summary["test"]["n"]
    table = Table(title=f"dates, {n} held-out test pairs", title_justify="left")
    for col in ("model", "params", "steps", "CPU seconds", "exact match", "token accuracy"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for a in ATTENTIONS:
        m = summary["models"][a]
        table.add_row(
            {"bahdanau": "Bahdanau attention", "none": "no attention"}[a],
            f"{m['params']:,}",
            str(m["steps"]),
            f"{m['cpu_seconds']:.1f}",
            f"{m['exact_match']:.1%}",
            f"{m['token_accuracy']:.1%}",
        )
    console.print(table)
    console.print(f"report: {os.path.join(out, 'report.html')}", soft_wrap=True, highlight=False)
    return 0
