"""`gatescope train` and `gatescope evaluate`: train on a long-term-memory task, score a file.

    gatescope train --task recall --arch lstm --length 100 --out recall.safetensors
    gatescope train --resume recall.safetensors --steps 6000      # continue to step 6000
    gatescope evaluate recall.safetensors --json

Exit codes: 0 done (solved or not), 1 training diverged (NaN/Inf; the last good checkpoint
is kept), 2 bad input (one line `error: ...`, no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from gatescope.model import SequenceModel, load_model
from gatescope.nn.recurrent import ARCHS, LSTM_VARIANTS
from gatescope.optim import OPTIMIZERS
from gatescope.tasks import TASKS, get_task, task_from_dict
from gatescope.train import DEFAULT_TEST_SEED, TrainConfig, evaluate_model, fit, resume_state

from . import CLIError
from .args import nonnegative_int, positive_float, positive_int, resume_overrides

# Model defaults of `gatescope train` (training defaults are TrainConfig's).
DEFAULT_LENGTH = 100
DEFAULT_HIDDEN = 64
DEFAULT_LAYERS = 1
DEFAULT_DTYPE = "float32"
# LSTM forget-gate bias at initialisation. The textbook chapter's 1.0 gives f = sigmoid(1) = 0.73
# and a gradient of 0.73**99 ~ 1e-14 across recall's 99 steps: it never starts learning. At 3.0,
# 0.95**99 ~ 0.008 gets through (measured: docs/training.md's results table, recall T = 100).
DEFAULT_FORGET_BIAS = 3.0
_TRAIN_DEFAULTS = TrainConfig()

# flag dest -> TrainConfig field, for flags that shape the run (compared on --resume)
_TRAIN_FLAGS = {
    "batch": "batch_size",
    "lr": "lr",
    "optimizer": "optimizer",
    "momentum": "momentum",
    "clip_norm": "clip_norm",
    "clip_value": "clip_value",
    "seed": "seed",
    "eval_every": "eval_every",
    "eval_size": "eval_size",
    "patience": "patience",
}


def _clip(text: str) -> float:
    """A positive clipping threshold, or 0.0 for 'off' (0, off, none); None means not given."""
    if text.lower() in ("off", "none"):
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive number or 0/off, got {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a positive number or 0/off, got {text!r}")
    return value


def _train_flag(args: argparse.Namespace, flag: str) -> Any:
    """The TrainConfig value a flag asks for; None when it was not given."""
    value = getattr(args, flag)
    if flag in ("clip_norm", "clip_value") and value is not None:
        return _OFF if value == 0.0 else value
    return value


_OFF = "off"  # a clipping flag given as 0/off (TrainConfig's None)


def _d(value: Any) -> str:
    return f"(default: {'off' if value is None else value})"


def register(sub: argparse._SubParsersAction) -> None:
    d = _TRAIN_DEFAULTS
    p = sub.add_parser(
        "train",
        help="train an LSTM, GRU or RNN on a long-term-memory task",
        description=(
            "Train a recurrent network on recall, adding, copy or order and write a checkpoint "
            "(safetensors weights + JSON metadata, written atomically). With no tuning flags "
            "an LSTM solves recall and adding at length 100. Exit codes: 0 done, 1 diverged "
            "(NaN/Inf; the last good checkpoint is kept), 2 bad input."
        ),
    )
    g = p.add_argument_group("the task and the model (fixed by the checkpoint when resuming)")
    g.add_argument("--task", choices=sorted(TASKS), help="the task (required unless --resume)")
    g.add_argument("--arch", choices=ARCHS, help="the recurrent layer (required unless --resume)")
    g.add_argument(
        "--length",
        type=positive_int,
        metavar="T",
        help=f"sequence length / delay {_d(DEFAULT_LENGTH)}",
    )
    g.add_argument(
        "--hidden",
        type=positive_int,
        metavar="H",
        help=f"hidden units per layer {_d(DEFAULT_HIDDEN)}",
    )
    g.add_argument(
        "--layers", type=positive_int, metavar="L", help=f"stacked layers {_d(DEFAULT_LAYERS)}"
    )
    g.add_argument(
        "--forget-bias",
        type=float,
        metavar="B",
        help=f"LSTM only: initial forget-gate bias {_d(DEFAULT_FORGET_BIAS)}",
    )
    g.add_argument(
        "--update-bias",
        type=float,
        metavar="B",
        help="GRU only: initial update-gate bias (default: 0, as PyTorch; 3 keeps the state "
        "early and solves recall at T = 50, see docs/training.md)",
    )
    g.add_argument(
        "--variant",
        choices=LSTM_VARIANTS,
        help="LSTM only: peephole, coupled input-forget gate, no forget/input/output gate, "
        "no output activation, or layer norm; see gatescope.nn.lstm_variants (default: vanilla)",
    )
    g.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help=f"parameter and compute precision {_d(DEFAULT_DTYPE)}",
    )

    g = p.add_argument_group("training")
    g.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        help=f"total optimizer steps; with --resume, the new total {_d(d.steps)}",
    )
    g.add_argument(
        "--batch", type=positive_int, metavar="B", help=f"sequences per step {_d(d.batch_size)}"
    )
    g.add_argument("--lr", type=positive_float, help=f"learning rate {_d(d.lr)}")
    g.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help=f"{_d(d.optimizer)}")
    g.add_argument(
        "--momentum",
        type=float,
        help="momentum for sgd and rmsprop (default: 0.9 with sgd, 0 with rmsprop)",
    )
    g.add_argument(
        "--clip-norm",
        "--clip",
        dest="clip_norm",
        type=_clip,
        metavar="MAX",
        help=f"clip the global gradient norm to MAX; 0 or off disables {_d(d.clip_norm)}",
    )
    g.add_argument(
        "--clip-value",
        type=_clip,
        metavar="MAX",
        help=f"clamp every gradient entry to +-MAX; 0 or off disables {_d(d.clip_value)}",
    )
    g.add_argument(
        "--seed",
        type=nonnegative_int,
        metavar="S",
        help=f"seed of the initial weights and the training batches {_d(d.seed)}",
    )
    g.add_argument(
        "--eval-every",
        type=positive_int,
        metavar="N",
        help=f"steps between evaluations on the held-out set {_d(d.eval_every)}",
    )
    g.add_argument(
        "--eval-size", type=positive_int, metavar="N", help=f"held-out sequences {_d(d.eval_size)}"
    )
    g.add_argument(
        "--patience",
        type=nonnegative_int,
        metavar="N",
        help=f"stop after N evaluations without improvement; 0: never {_d(d.patience)}",
    )
    g.add_argument(
        "--no-early-stop",
        dest="early_stop",
        action="store_false",
        default=None,
        help="keep training after the task counts as solved (default: stop when solved)",
    )

    g = p.add_argument_group("files and output")
    g.add_argument(
        "--out",
        metavar="CKPT",
        help="checkpoint to write (its folder must exist); default with --resume CKPT: CKPT",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue the run saved in CKPT (default: the --out file); --steps counts the total",
    )
    g.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing --out file that is not being resumed",
    )
    g.add_argument(
        "--checkpoint-every",
        type=nonnegative_int,
        metavar="N",
        help=f"steps between checkpoints; 0: only at the end {_d(d.checkpoint_every)}",
    )
    g.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (it is shown only on a terminal anyway)",
    )
    g.add_argument(
        "--quiet", action="store_true", help="no per-evaluation lines, only the final summary"
    )
    p.set_defaults(handler=handle_train)

    e = sub.add_parser(
        "evaluate",
        help="score a checkpoint on fresh sequences of its task",
        description="Score a checkpoint written by `gatescope train` on fresh test sequences "
        "of its task (a stream no training run has seen).",
    )
    e.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by `gatescope train`")
    e.add_argument(
        "--n", type=positive_int, default=1000, metavar="N", help="test sequences (default: 1000)"
    )
    e.add_argument(
        "--seed",
        type=nonnegative_int,
        default=DEFAULT_TEST_SEED,
        metavar="S",
        help=f"seed of the test sequences (default: {DEFAULT_TEST_SEED})",
    )
    e.add_argument("--json", action="store_true", help="print the result as one JSON object")
    e.set_defaults(handler=handle_evaluate)


# ------------------------------------------------------------------------------ train


def _check_out(path: str, force: bool, resuming_from: str | None) -> None:
    if os.path.isdir(path):
        raise CLIError(
            f"--out {path} is a folder; give a file path such as {path.rstrip('/')}/run.safetensors"
        )
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise CLIError(f"--out {path}: folder {folder!r} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise CLIError(f"--out {path}: folder {folder!r} is not writable")
    if os.path.exists(path) and not force and not _same_file(path, resuming_from):
        raise CLIError(
            f"--out {path} already exists; use --resume to continue it, or --force to overwrite it"
        )


def _same_file(a: str, b: str | None) -> bool:
    try:
        return b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _fresh_run(args: argparse.Namespace) -> tuple[Any, SequenceModel, TrainConfig]:
    if args.task is None or args.arch is None:
        missing = " and ".join(
            f for f, v in (("--task", args.task), ("--arch", args.arch)) if v is None
        )
        raise CLIError(f"{missing} required (or --resume a checkpoint)")
    task = get_task(args.task, args.length or DEFAULT_LENGTH)
    kw = {field: _train_flag(args, flag) for flag, field in _TRAIN_FLAGS.items()}
    kw = {k: (None if v == _OFF else v) for k, v in kw.items() if v is not None}
    for flag, field in (
        ("steps", "steps"),
        ("checkpoint_every", "checkpoint_every"),
        ("early_stop", "early_stop"),
    ):
        if getattr(args, flag) is not None:
            kw[field] = getattr(args, flag)
    if "optimizer" in kw and kw["optimizer"] in ("sgd",) and "momentum" not in kw:
        kw["momentum"] = 0.9  # plain SGD barely moves on these tasks
    config = TrainConfig(**kw)
    layer_options = {}
    if args.arch == "lstm":
        fb = DEFAULT_FORGET_BIAS if args.forget_bias is None else args.forget_bias
        if not math.isfinite(fb):
            raise CLIError(f"--forget-bias must be a finite number, got {fb}")
        layer_options["forget_bias"] = fb
        if args.variant is not None:
            layer_options["variant"] = args.variant
    elif args.forget_bias is not None:
        raise CLIError(f"--forget-bias applies to --arch lstm only, not {args.arch}")
    elif args.variant is not None:
        raise CLIError(f"--variant applies to --arch lstm only, not {args.arch}")
    if args.update_bias is not None:
        if args.arch != "gru":
            raise CLIError(f"--update-bias applies to --arch gru only, not {args.arch}")
        if not math.isfinite(args.update_bias):
            raise CLIError(f"--update-bias must be a finite number, got {args.update_bias}")
        layer_options["update_bias"] = args.update_bias
    model = SequenceModel.for_task(
        task,
        args.arch,
        hidden_size=args.hidden or DEFAULT_HIDDEN,
        num_layers=args.layers or DEFAULT_LAYERS,
        seed=config.seed,
        dtype=args.dtype or DEFAULT_DTYPE,
        **layer_options,
    )
    return task, model, config


def _refuse_charlm(path: str, meta: dict[str, Any], instead: str) -> None:
    from gatescope.charlm import is_charlm

    if is_charlm(meta):
        raise CLIError(f"{path} is a character-level language model: {instead}")


def _resumed_run(
    args: argparse.Namespace, source: str
) -> tuple[Any, SequenceModel, TrainConfig, Any]:
    _refuse_charlm(
        source,
        load_model(source)[1],
        f"continue it with `gatescope charlm train --out {source} --resume`",
    )
    task, model, config, state = resume_state(source)
    c = model.config
    given = {
        "--task": (args.task, task.name),
        "--arch": (args.arch, c.arch),
        "--length": (args.length, task.length),
        "--hidden": (args.hidden, c.hidden_size),
        "--layers": (args.layers, c.num_layers),
        "--dtype": (args.dtype, c.dtype),
        "--forget-bias": (args.forget_bias, c.layer_options.get("forget_bias")),
        "--update-bias": (args.update_bias, c.layer_options.get("update_bias", 0.0)),
        "--variant": (args.variant, c.layer_options.get("variant", "vanilla")),
    }
    if args.early_stop is False and config.early_stop:
        given["--no-early-stop"] = ("given", "early stopping on")
    for flag, field in _TRAIN_FLAGS.items():
        old = getattr(config, field)
        given["--" + flag.replace("_", "-")] = (
            _train_flag(args, flag),
            _OFF if old is None else old,
        )
    clashes = [
        f"{flag} {new} (the checkpoint has {old})"
        for flag, (new, old) in given.items()
        if new is not None and new != old
    ]
    if clashes:
        raise CLIError(
            f"--resume {source} continues the saved run, which these flags would change: "
            f"{'; '.join(clashes)}; drop them, or start a new run"
        )
    overrides = resume_overrides(args)
    config = TrainConfig(**{**config.to_dict(), **overrides})
    return task, model, config, state


def handle_train(args: argparse.Namespace) -> int:
    source = None
    if args.resume is not None:
        source = args.out if args.resume is True else args.resume
        if source is None:
            raise CLIError("--resume needs a checkpoint: --resume CKPT, or --out CKPT --resume")
    out = args.out or source
    if out is None:
        raise CLIError("--out CKPT is required (where to write the checkpoint)")
    _check_out(out, args.force, source)
    if source is not None:
        task, model, config, state = _resumed_run(args, source)
        if state.step >= config.steps and state.stop_reason is None:
            raise CLIError(
                f"{source} is already at step {state.step}; pass --steps N with N > "
                f"{state.step} to train further"
            )
    else:
        task, model, config = _fresh_run(args)
        state = None

    interactive = sys.stderr.isatty()
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if not args.quiet:
        what = "resuming" if state is not None else "training"
        at = f" from step {state.step}" if state is not None else ""
        print(
            f"{what} {model!r} on {task.name} (length {task.length}){at} to step "
            f"{config.steps}: {config.optimizer} lr {config.lr:g}, batch {config.batch_size}, "
            f"clip_norm {config.clip_norm}, seed {config.seed}",
            file=sys.stderr,
            flush=True,
        )
    result = fit(
        task,
        model,
        config,
        checkpoint_path=out,
        progress=args.progress and interactive,
        state=state,
        log=log,
    )
    if result.stop_reason == "diverged":
        print(f"error: {result.message} (--lr, --clip-norm)", file=sys.stderr)
        return 1
    value = result.metrics.get(task.metric_name, math.nan)
    print(
        f"{model.config.arch} on {task.name} (length {task.length}): {task.metric_name} "
        f"{value:.4g} (baseline {task.baseline:.4g}), solved: {'yes' if result.solved else 'no'}, "
        f"{result.steps} steps ({result.stop_reason}) in {result.seconds:.1f} s; "
        f"checkpoint: {result.checkpoint_path or out}"
    )
    return 0


# ------------------------------------------------------------------------------ evaluate


def evaluation_report(path: str, n: int = 1000, seed: int = DEFAULT_TEST_SEED) -> dict[str, Any]:
    """The dict `gatescope evaluate --json` prints."""
    model, meta = load_model(path)
    _refuse_charlm(path, meta, f"measure it with `gatescope charlm eval {path} --text PATH`")
    if not isinstance(meta.get("task"), dict):
        raise CLIError(f"{path}: the checkpoint does not say which task it was trained on")
    try:
        task = task_from_dict(meta["task"])
    except ValueError as e:
        raise CLIError(f"{path}: invalid task in the metadata: {e}") from None
    metrics = evaluate_model(task, model, n=n, seed=seed)
    value = metrics[task.metric_name]
    c = model.config
    return {
        "checkpoint": path,
        "task": task.name,
        "length": task.length,
        "task_config": task.to_dict(),
        "arch": c.arch,
        "hidden_size": c.hidden_size,
        "num_layers": c.num_layers,
        "dtype": c.dtype,
        "step": meta.get("step"),
        "metric": task.metric_name,
        task.metric_name: value,
        "metrics": metrics,
        "baseline": task.baseline,
        "threshold": task.threshold,
        "higher_is_better": task.higher_is_better,
        "solved": bool(not math.isnan(value) and task.solved(metrics)),
        "n": n,
        "seed": seed,
    }


def handle_evaluate(args: argparse.Namespace) -> int:
    report = evaluation_report(args.checkpoint, n=args.n, seed=args.seed)
    if args.json:
        print(json.dumps(_json_safe(report), allow_nan=False))
        return 0
    name = report["metric"]
    print(
        f"{report['arch']} (H={report['hidden_size']}, L={report['num_layers']}) on "
        f"{report['task']}, length {report['length']}, step {report['step']}: {name} "
        f"{report[name]:.4g} (baseline {report['baseline']:.4g}, solved: "
        f"{'yes' if report['solved'] else 'no'}) on {report['n']} test sequences"
    )
    return 0


def _json_safe(obj: Any) -> Any:
    """NaN and Inf (a diverged model's metrics) become null: strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj
