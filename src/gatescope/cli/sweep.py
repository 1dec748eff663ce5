"""`gatescope sweep` and `gatescope sweep-plot`: capacity curves over archs, lengths and seeds.

    gatescope sweep --task recall --arch lstm,gru,rnn --lengths 10,25,50,100 --seeds 3 \\
        --steps 1500 --hidden 32 --out runs/recall [--executor local|dask] [--workers N] \\
        [--scheduler tcp://HOST:PORT]
    gatescope sweep-plot runs/recall [--out capacity.png]

Every training flag of `TrainConfig` (gatescope.train) is a flag here too (`--steps`,
`--lr`, `--batch-size`, ...), made from its fields so the two never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from . import CLIError
from .args import positive_int
from .train import DEFAULT_FORGET_BIAS  # the LSTM's initial forget-gate bias, as `train`

_ARCHS_DEFAULT = "lstm,gru,rnn"
_TRAIN_DEST = "train__"  # prefix of the argparse dests of TrainConfig's flags
# TrainConfig fields the sweep sets itself (seed), or that cannot change a run (no checkpoints)
# and the options of the text (truncated-BPTT) loop, which no task run uses: leaving them out
# keeps the run ids of sweeps recorded before they existed
_TRAIN_SKIP = {
    "seed",
    "checkpoint_every",
    "carry_state",
    "lr_decay",
    "min_gain",
    "min_lr",
    "sample_every",
    "sample_chars",
    "solved_evals",
}


# ----------------------------------------------------------------------------- parsing helpers


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def _name_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values


def _key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE; VALUE is read as JSON (numbers, true/false, null) or else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _optional(convert: Any) -> Any:
    """For ``X | None`` fields (the clip limits): off, none, null or 0 mean None, as in train."""

    def parse(text: str) -> Any:
        if text.strip().lower() in ("off", "none", "null", "0", "0.0"):
            return None
        return convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


# the short names `gatescope train` uses for some TrainConfig fields, accepted here too
_ALIASES = {"batch_size": ("--batch",), "clip_norm": ("--clip",)}
_CONVERTERS = {"int": int, "float": _finite_float, "str": str, "bool": _bool}


def _field_converter(f: dataclasses.Field, hints: dict[str, Any]) -> Any:
    """argparse `type=` for a TrainConfig field of a simple type (int, float, str, bool, X|None)."""
    tp = hints.get(f.name, f.type)
    if isinstance(tp, str):  # unresolved annotation: read its names
        names = [t.strip() for t in tp.split("|")]
    else:
        args = typing.get_args(tp) if isinstance(tp, types.UnionType) else ()
        if typing.get_origin(tp) is typing.Union:
            args = typing.get_args(tp)
        parts = args or (tp,)
        names = ["None" if p is type(None) else getattr(p, "__name__", str(p)) for p in parts]
    optional = "None" in names
    names = [n for n in names if n != "None"]
    if len(names) != 1 or names[0] not in _CONVERTERS:
        return None
    convert = _CONVERTERS[names[0]]
    return _optional(convert) if optional else convert


def _train_fields() -> list[tuple[dataclasses.Field, Any]]:
    """TrainConfig's fields that are flags here, with their converters."""
    from gatescope.train import TrainConfig

    try:
        hints = typing.get_type_hints(TrainConfig)
    except Exception:  # noqa: BLE001 - fall back to the annotation strings
        hints = {}
    out = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in _TRAIN_SKIP or f.name.startswith("_"):
            continue
        convert = _field_converter(f, hints)
        if convert is not None:
            out.append((f, convert))
    return out


def _field_comments() -> dict[str, str]:
    """TrainConfig's field comments (``name: type = default  # comment``), for --help."""
    import inspect

    from gatescope.train import TrainConfig

    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):  # no source file (a frozen or zipped install)
        return {}
    found = re.findall(r"^\s+(\w+): [^=#\n]+=[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE)
    return {name: comment.strip().replace("%", "%%") for name, comment in found}


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory())  # type: ignore[misc]
    return "required"


# ----------------------------------------------------------------------------- the commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train many runs (arch x length x seed) and record them for a capacity curve",
        description=(
            "Train every (architecture, length, seed) combination, one process per run, and "
            "append one row per finished run to OUT/results.jsonl. Re-running the same command "
            "skips the runs already recorded; a failed run is recorded with its error."
        ),
        formatter_class=argparse.HelpFormatter,
    )
    p.add_argument(
        "--task",
        default="recall",
        help="task name: recall, adding, copy or order (default: %(default)s)",
    )
    p.add_argument(
        "--arch", type=_name_list, default=_name_list(_ARCHS_DEFAULT), metavar="A,B,...",
        help=f"architectures, comma-separated (default: {_ARCHS_DEFAULT})",
    )  # fmt: skip
    p.add_argument(
        "--lengths", type=_int_list, required=True, metavar="N,N,...",
        help="task lengths, comma-separated",
    )  # fmt: skip
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=3,
        help="seeds per point: 0..N-1 (default: %(default)s)",
    )
    p.add_argument(
        "--first-seed", type=int, default=0, help="start the seeds here (default: %(default)s)"
    )
    p.add_argument(
        "--hidden", type=positive_int, default=32, help="hidden units H (default: %(default)s)"
    )
    p.add_argument(
        "--layers",
        type=positive_int,
        default=1,
        help="stacked recurrent layers (default: %(default)s)",
    )
    p.add_argument(
        "--dtype", default="float64", choices=("float32", "float64"), help="(default: %(default)s)"
    )
    p.add_argument(
        "--forget-bias", type=_finite_float, default=DEFAULT_FORGET_BIAS, metavar="B",
        help="LSTM runs only: initial forget-gate bias, as in `gatescope train` "
        "(default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--variant", default=None, metavar="NAME",
        help="LSTM runs only: an LSTM variant (peephole, cifg, nfg, nig, nog, noaf, layernorm; "
        "default: vanilla)",
    )  # fmt: skip
    p.add_argument(
        "--task-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="a task field, e.g. noise_std=0.5 (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--layer-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="a recurrent-layer option, e.g. forget_bias=0 (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--eval-n", type=positive_int, default=1000,
        help="fresh test sequences for each run's final score (default: %(default)s)",
    )  # fmt: skip
    fields = _train_fields()
    comments = _field_comments()
    if fields:
        g = p.add_argument_group("training (gatescope.train.TrainConfig, for every run)")
        for f, convert in fields:
            flags = ["--" + f.name.replace("_", "-"), *_ALIASES.get(f.name, ())]
            help = f"{comments.get(f.name, 'TrainConfig.' + f.name)} (default: {_default_text(f)})"
            if convert is _bool:  # --early-stop / --no-early-stop
                g.add_argument(
                    *flags,
                    dest=_TRAIN_DEST + f.name,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=help,
                )
            else:
                g.add_argument(
                    *flags,
                    dest=_TRAIN_DEST + f.name,
                    type=convert,
                    default=argparse.SUPPRESS,
                    metavar=f.name.split("_")[-1].upper(),
                    help=help,
                )
    p.add_argument("--out", required=True, type=Path, help="sweep directory (results.jsonl)")
    p.add_argument(
        "--executor", choices=("local", "dask", "serial"), default=None,
        help="local: a pool of processes; dask: a Dask cluster (--scheduler, or a local one); "
        "serial: this process (unset: dask if --scheduler is given, else local)",
    )  # fmt: skip
    p.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", default=None,
        help="a running Dask scheduler; implies --executor dask",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=positive_int, default=None,
        help="processes for the local executor or a local Dask cluster (default: one per core)",
    )  # fmt: skip
    p.add_argument(
        "--retry-failed", action="store_true", help="run again the runs recorded as failed"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=handler)

    q = sub.add_parser(
        "sweep-plot",
        help="draw a sweep's capacity curve and print its table",
        description="Plot success rate and final metric against length, one line per "
        "architecture over the seeds of a sweep directory, and print the table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    q.add_argument("dir", type=Path, help="a sweep directory (with results.jsonl)")
    q.add_argument(
        "--out", type=Path, default=None, help="figure file (.png, .svg, .pdf); default DIR/capacity.png"
    )  # fmt: skip
    q.add_argument("--title", default=None, help="figure title")
    q.set_defaults(handler=plot_handler)


def _specs(args: argparse.Namespace) -> list[Any]:
    """The sweep's runs, every option checked here so that bad flags fail before any run."""
    from gatescope.model import SequenceModel
    from gatescope.sweep import make_grid
    from gatescope.tasks import get_task

    task_options = dict(args.task_option)
    layer_options = dict(args.layer_option)
    # LSTM-only options, as `gatescope train` sets them; the other archs' specs stay without
    lstm_options = {"forget_bias": args.forget_bias} | (
        {"variant": args.variant} if args.variant is not None else {}
    )
    if args.variant is not None and "lstm" not in args.arch:
        raise CLIError(f"--variant applies to LSTM runs, but --arch is {','.join(args.arch)}")
    tasks = [get_task(args.task, n, **task_options) for n in args.lengths]
    for arch in args.arch:  # a bad arch or layer option fails now, not in every run
        SequenceModel.for_task(
            tasks[0], arch, args.hidden, num_layers=args.layers, seed=0, dtype=args.dtype,
            **layer_options, **(lstm_options if arch == "lstm" else {}),
        )  # fmt: skip
    train = _resolved_train(args)
    if args.first_seed < 0:
        raise CLIError(f"--first-seed must be >= 0, got {args.first_seed}")
    specs = make_grid(
        args.task,
        args.arch,
        args.lengths,
        list(range(args.first_seed, args.first_seed + args.seeds)),
        hidden_size=args.hidden,
        num_layers=args.layers,
        dtype=args.dtype,
        task_options=task_options,
        layer_options=layer_options,
        train=train,
        eval_n=args.eval_n,
    )
    return [
        dataclasses.replace(s, layer_options={**s.layer_options, **lstm_options})
        if s.arch == "lstm"
        else s
        for s in specs
    ]


def _resolved_train(args: argparse.Namespace) -> dict[str, Any]:
    """Every TrainConfig field (defaults filled in) but the seed: part of each run's id."""
    from gatescope.train import TrainConfig

    given = {k[len(_TRAIN_DEST) :]: v for k, v in vars(args).items() if k.startswith(_TRAIN_DEST)}
    config = TrainConfig(**given, seed=0)  # validates the flags
    resolved = {}
    for f in dataclasses.fields(config):
        if f.name in _TRAIN_SKIP:
            continue
        value = getattr(config, f.name)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            if f.name in given:
                raise CLIError(
                    f"--{f.name.replace('_', '-')} cannot be recorded: {value!r}"
                ) from None
            continue  # a non-JSON default cannot be passed back; leave it to TrainConfig
        resolved[f.name] = value
    return resolved


def handler(args: argparse.Namespace) -> int:
    from gatescope.inspect.capacity import capacity_curve
    from gatescope.sweep import RESULTS_FILE, SweepError, read_results, run_sweep

    executor = args.executor or ("dask" if args.scheduler else "local")
    if args.scheduler and executor != "dask":
        raise CLIError(f"--scheduler needs --executor dask, got --executor {executor}")
    specs = _specs(args)
    where = args.scheduler or (
        f"{args.workers or 'one per core'} {'Dask ' if executor == 'dask' else ''}"
        f"{'processes' if executor != 'serial' else ''}".strip()
    )
    print(
        f"sweep: {len(specs)} runs ({len(args.arch)} archs x {len(args.lengths)} lengths x "
        f"{args.seeds} seeds) -> {args.out / RESULTS_FILE}; executor {executor} ({where})",
        file=sys.stderr,
    )
    try:
        summary = run_sweep(
            specs,
            args.out,
            executor=executor,
            workers=args.workers,
            scheduler=args.scheduler,
            retry_failed=args.retry_failed,
            progress=not args.no_progress,
        )
    except SweepError as e:
        raise CLIError(str(e)) from e
    ids = {s.run_id for s in specs}
    latest = read_results(args.out).latest
    rows = [row for rid, row in latest.items() if rid in ids]
    _print_table(capacity_curve(rows))
    failed_before = sum(row.get("status") != "ok" for row in rows) - summary.failed
    note = (
        f" ({failed_before} of them failed; --retry-failed runs those again)"
        if failed_before
        else ""
    )
    print(
        f"sweep: {summary.ok} runs finished, {summary.failed} failed, {summary.skipped} "
        f"recorded before{note}; results in {summary.path}",
        file=sys.stderr,
    )
    for row in summary.failures[:5]:
        spec = row["spec"]
        print(
            f"failed: {spec['arch']} T={spec['length']} seed={spec['seed']}: {row['error']}",
            file=sys.stderr,
        )
    return 1 if summary.failed else 0


def plot_handler(args: argparse.Namespace) -> int:
    from gatescope.inspect.capacity import capacity_curve
    from gatescope.sweep import read_results

    results = read_results(args.dir)
    if results.bad_lines:
        print(
            f"warning: skipped {results.bad_lines} unreadable line(s) of the results file",
            file=sys.stderr,
        )
    points = capacity_curve(results.latest.values())
    if not points:
        raise CLIError(f"no runs recorded in {args.dir} yet")
    _print_table(points)
    from gatescope.viz.capacity import save_capacity

    out = args.out if args.out is not None else args.dir / "capacity.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_capacity(points, out, title=args.title)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _print_table(points: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    metric = next((p.metric_name for p in points if p.metric_name), "metric")
    table = Table(title="capacity curve", title_justify="left")
    table.add_column("arch")
    table.add_column("length", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("solved", justify="right")
    table.add_column(f"{metric} mean ± std", justify="right")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    for p in points:
        finite = [m for m in p.metrics if m is not None]
        stats = (
            (f"{p.metric_mean:.3f} ± {p.metric_std:.3f}", f"{p.metric_min:.3f}", f"{p.metric_max:.3f}")
            if finite
            else ("-", "-", "-")
        )  # fmt: skip
        table.add_row(
            p.line,
            str(p.length),
            str(p.runs),
            str(p.failed) if p.failed else "",
            f"{p.solved}/{p.runs} ({p.success_rate:.0%})",
            *stats,
        )
    Console(width=max(100, Console().width)).print(table)
