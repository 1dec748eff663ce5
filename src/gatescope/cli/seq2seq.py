"""`gatescope seq2seq`: train, translate with, evaluate and plot an encoder-decoder.

    gatescope seq2seq train --task dates --out dates.safetensors        # attention: bahdanau
    gatescope seq2seq train --out dates.safetensors --resume --steps 6000
    gatescope seq2seq translate dates.safetensors "september 27, 1994" "9/27/94" --beam 3
    gatescope seq2seq evaluate dates.safetensors --json
    gatescope seq2seq plot attention dates.safetensors "Sep 27, 1994" --out a.png
    gatescope seq2seq plot attention dates.safetensors "9/27/94" "27.09.1994" --out grid.png
    gatescope seq2seq plot gates dates.safetensors "Sep 27, 1994" --out g.png
    gatescope seq2seq plot connectivity dates.safetensors "Sep 27, 1994" --out c.png

Exit codes: 0 done, 1 training diverged (the last good checkpoint is kept), 2 bad input
(one line `error: ...`, no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from gatescope.model import read_model_file
from gatescope.seq2seq import ARCHS, ATTENTIONS, EOS, SCORES, Seq2Seq
from gatescope.tasks import task_from_dict
from gatescope.tasks.seq2seq import SEQ2SEQ_TASKS, Seq2SeqTask, get_seq2seq_task
from gatescope.train import DEFAULT_TEST_SEED, TrainConfig, evaluate_model, fit, resume_state

from . import CLIError
from .args import HelpFormatter, nonnegative_int, positive_float, positive_int, resume_overrides
from .train import _check_out

# Defaults of `gatescope seq2seq train`, found by experiment (docs/seq2seq.md, "Results")
DEFAULTS = dict(
    arch="lstm",
    hidden=64,
    layers=1,
    attention="bahdanau",
    dtype="float32",
    steps=20000,
    batch=64,
    lr=3e-3,
    clip_norm=5.0,
    eval_every=250,
    eval_size=1000,
    checkpoint_every=500,
    seed=0,
    lr_decay=1.0,
    solved_evals=1,
)
# where a task needs more than DEFAULTS (measured: docs/seq2seq.md, "Results"): addition
# plateaus near 0.93 exact match at H = 64 with a constant lr; H = 128 with the lr cut by
# 0.7 at every evaluation that does not improve solves it (0.996) in about 5 minutes
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "dates": {},
    "addition": dict(hidden=128, lr_decay=0.7, eval_every=500),
    # reverse: stopping at the first evaluation >= 0.995 (all lengths) left strings of
    # length 20 at 0.988; four solved evaluations in a row (2000 steps more) first
    "reverse": dict(hidden=128, lr_decay=0.7, eval_every=500, solved_evals=4),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "seq2seq",
        help="sequence to sequence: train, translate, evaluate, plot an encoder-decoder",
        description="Stacked LSTM/GRU encoder-decoders with or without attention, on "
        "generated tasks (reverse, addition, dates).",
    )
    s = p.add_subparsers(dest="seq2seq_command", metavar="COMMAND", parser_class=type(p))
    p.set_defaults(handler=lambda args: _need_command(p))

    t = s.add_parser(
        "train",
        help="train on reverse, addition or dates",
        formatter_class=HelpFormatter,
        description="Train a Seq2Seq and write a checkpoint (atomically, every "
        "--checkpoint-every steps and at the end); stops when the held-out exact match "
        "reaches 0.995. Exit codes: 0 done, 1 diverged, 2 bad input.",
    )
    t.add_argument("--task", choices=sorted(SEQ2SEQ_TASKS), help="required unless --resume")
    t.add_argument(
        "--length",
        type=positive_int,
        help="reverse: longest string (20); addition: digits per operand (3)",
    )
    t.add_argument("--arch", choices=ARCHS, help=f"(default: {DEFAULTS['arch']})")
    t.add_argument(
        "--hidden",
        type=positive_int,
        metavar="H",
        help="(default: 64 for dates, 128 for addition and reverse)",
    )
    t.add_argument("--layers", type=positive_int, metavar="L", help="(default: 1)")
    t.add_argument("--attention", choices=ATTENTIONS, help="(default: bahdanau)")
    t.add_argument("--score", choices=SCORES, help="luong's score (default: general)")
    t.add_argument(
        "--bidirectional", action="store_true", default=None, help="a bidirectional encoder"
    )
    t.add_argument(
        "--reverse-source",
        action="store_true",
        default=None,
        help="reverse each source (Sutskever et al. 2014)",
    )
    t.add_argument("--dtype", choices=("float32", "float64"), help="(default: float32)")
    t.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        help="total steps; with --resume the new total (default: 20000)",
    )
    t.add_argument(
        "--minutes",
        type=positive_float,
        metavar="M",
        help="stop after M minutes of this call (resumable)",
    )
    t.add_argument("--batch", type=positive_int, metavar="B", help="(default: 64)")
    t.add_argument("--lr", type=positive_float, help="Adam's learning rate (default: 0.003)")
    t.add_argument(
        "--lr-decay",
        type=positive_float,
        metavar="F",
        help="multiply the lr by F at each evaluation that does not improve "
        "(default: 0.7 for addition and reverse, 1 (off) for dates)",
    )
    t.add_argument(
        "--seed", type=nonnegative_int, metavar="S", help="weights and batches (default: 0)"
    )
    t.add_argument(
        "--eval-every",
        type=positive_int,
        metavar="N",
        help="(default: 250 for dates, 500 for addition and reverse)",
    )
    t.add_argument(
        "--eval-size", type=positive_int, metavar="N", help="held-out pairs (default: 1000)"
    )
    t.add_argument("--checkpoint-every", type=nonnegative_int, metavar="N", help="(default: 500)")
    t.add_argument("--out", metavar="CKPT", required=True, help="checkpoint to write")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    t.add_argument("--force", action="store_true", help="overwrite an existing --out")
    t.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (shown only on a terminal anyway)",
    )
    t.add_argument("--quiet", action="store_true", help="only the final line")
    t.set_defaults(handler=handle_train)

    tr = s.add_parser("translate", help="decode texts with a trained model")
    tr.add_argument("checkpoint", metavar="CKPT")
    tr.add_argument("texts", nargs="+", metavar="TEXT")
    tr.add_argument("--beam", type=positive_int, default=1, help="beam width (1: greedy)")
    tr.add_argument("--json", action="store_true", help='a list of {"input", "output"}')
    tr.set_defaults(handler=handle_translate)

    e = s.add_parser("evaluate", help="exact match and token accuracy on fresh held-out pairs")
    e.add_argument("checkpoint", metavar="CKPT")
    e.add_argument("--n", type=positive_int, default=1000, help="test pairs (default: 1000)")
    e.add_argument(
        "--seed",
        type=nonnegative_int,
        default=DEFAULT_TEST_SEED,
        help=f"seed of the test pairs (default: {DEFAULT_TEST_SEED})",
    )
    e.add_argument("--json", action="store_true", help="one JSON object")
    e.set_defaults(handler=handle_evaluate)

    pl = s.add_parser("plot", help="figures: attention, gates, connectivity")
    pl.add_argument("figure", choices=("attention", "gates", "connectivity"))
    pl.add_argument("checkpoint", metavar="CKPT")
    pl.add_argument(
        "texts",
        nargs="+",
        metavar="TEXT",
        help="attention: one text (one heatmap) or several (a grid); gates: one text",
    )
    pl.add_argument("--out", required=True, metavar="PNG")
    pl.add_argument(
        "--cols", type=positive_int, metavar="N", help="attention grid: panels a row (default 3)"
    )
    pl.add_argument(
        "--part",
        choices=("encoder", "decoder"),
        default="decoder",
        help="gates: which part (default: decoder)",
    )
    pl.set_defaults(handler=handle_plot)


def _need_command(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


# ------------------------------------------------------------------------------ files


def load(path: str) -> tuple[Seq2Seq, Seq2SeqTask, dict[str, Any]]:
    """(model, task, meta) of a checkpoint written by `gatescope seq2seq train`."""
    model, meta, _ = read_model_file(path)
    if not isinstance(model, Seq2Seq):
        raise CLIError(f"{path} is not a seq2seq checkpoint (use `gatescope seq2seq train`)")
    task = task_from_dict(meta.get("task") or {})
    if not isinstance(task, Seq2SeqTask):
        raise CLIError(f"{path}: its task {task.name!r} is not a seq2seq task")
    return model, task, meta


# ------------------------------------------------------------------------------ train


def _fresh(args: argparse.Namespace) -> tuple[Seq2SeqTask, Seq2Seq, TrainConfig]:
    if args.task is None:
        raise CLIError("--task is required (or --resume)")
    d = {**DEFAULTS, **TASK_DEFAULTS[args.task]}
    options = {} if args.length is None else {"length": args.length}
    task = get_seq2seq_task(args.task, **options)

    def pick(name: str) -> Any:
        v = getattr(args, name)
        return d[name] if v is None else v

    config = TrainConfig(
        steps=pick("steps"),
        batch_size=pick("batch"),
        lr=pick("lr"),
        clip_norm=d["clip_norm"],
        eval_every=pick("eval_every"),
        eval_size=pick("eval_size"),
        seed=pick("seed"),
        checkpoint_every=pick("checkpoint_every"),
        lr_decay=pick("lr_decay"),
        solved_evals=d["solved_evals"],
    )
    model = Seq2Seq(
        task.input_size,
        task.output_size,
        pick("hidden"),
        arch=pick("arch"),
        num_layers=pick("layers"),
        attention=pick("attention"),
        seed=config.seed,
        dtype=pick("dtype"),
        score=args.score or "general",
        bidirectional=bool(args.bidirectional),
        reverse_source=bool(args.reverse_source),
    )
    return task, model, config


_MODEL_FLAGS = (
    "task",
    "length",
    "arch",
    "hidden",
    "layers",
    "attention",
    "score",
    "bidirectional",
    "reverse_source",
    "dtype",
    "batch",
    "lr",
    "seed",
    "eval_every",
    "eval_size",
)


def handle_train(args: argparse.Namespace) -> int:
    state = None
    _check_out(args.out, args.force, args.out if args.resume else None)
    if args.resume:
        given = [f"--{f.replace('_', '-')}" for f in _MODEL_FLAGS if getattr(args, f) is not None]
        if given:
            raise CLIError(
                f"--resume continues the saved run; drop {', '.join(given)} (or start a new run)"
            )
        overrides = resume_overrides(args)
        task, model, config, state = resume_state(args.out, **overrides)
        if not isinstance(model, Seq2Seq):
            raise CLIError(f"{args.out} is not a seq2seq checkpoint")
        if state.step >= (config.steps or 0) and state.stop_reason is None:
            raise CLIError(f"{args.out} is already at step {state.step}; pass --steps N > it")
    else:
        task, model, config = _fresh(args)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if not args.quiet:
        print(
            f"training {model!r} on {task.name} to step {config.steps}"
            + (f" from step {state.step}" if state else ""),
            file=sys.stderr,
            flush=True,
        )
    result = fit(
        task,
        model,
        config,
        checkpoint_path=args.out,
        progress=args.progress and sys.stderr.isatty(),
        state=state,
        log=log,
        time_limit=None if args.minutes is None else 60.0 * args.minutes,
    )
    if result.stop_reason == "diverged":
        print(f"error: {result.message}", file=sys.stderr)
        return 1
    m = result.metrics
    print(
        f"{task.name}: exact_match {m.get('exact_match', math.nan):.4g}, token_accuracy "
        f"{m.get('token_accuracy', math.nan):.4g} (baseline {task.baseline:.3g}) on held-out "
        f"pairs, solved: {'yes' if result.solved else 'no'}, {result.steps} steps "
        f"({result.stop_reason}) in {result.seconds:.1f} s; checkpoint: {args.out}"
    )
    return 0


# ------------------------------------------------------------------------------ use


def handle_translate(args: argparse.Namespace) -> int:
    model, task, _ = load(args.checkpoint)
    ids = task.encode(args.texts)  # ValueError naming characters outside the vocabulary
    outs = model.translate(ids, beam=args.beam, max_len=task.max_target_len + 5)
    pairs = [{"input": t, "output": task.decode(o)} for t, o in zip(args.texts, outs, strict=True)]
    if args.json:
        print(json.dumps(pairs, ensure_ascii=False))
    else:
        for p in pairs:
            print(p["output"])
    return 0


def handle_evaluate(args: argparse.Namespace) -> int:
    model, task, meta = load(args.checkpoint)
    metrics = evaluate_model(task, model, n=args.n, seed=args.seed)
    report = {
        **metrics,
        "baseline": task.baseline,
        "solved": task.solved(metrics),
        "task": task.to_dict(),
        "model": model.config.to_dict(),
        "step": meta.get("step"),
        "n": args.n,
        "seed": args.seed,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{task.name}: exact_match {metrics['exact_match']:.4g}, token_accuracy "
            f"{metrics['token_accuracy']:.4g} on {args.n} held-out pairs (baseline "
            f"{task.baseline:.3g})"
        )
    return 0


def handle_plot(args: argparse.Namespace) -> int:
    if args.figure == "connectivity":
        return _plot_connectivity(args)
    from gatescope import viz
    from gatescope.inspect.seq2seq import decode_attention
    from gatescope.viz.seq2seq import attention_figure, attention_grid_figure

    model, task, _ = load(args.checkpoint)
    texts = args.texts
    ids = task.encode(texts)  # ValueError naming characters outside the vocabulary
    if args.figure == "attention":
        if model.config.attention == "none":
            raise CLIError(f"{args.checkpoint} has no attention (attention='none')")
        decoded = decode_attention(model, task, texts)
        labels = [[*d.output, "<eos>"][: d.alpha.shape[0]] for d in decoded]
        titles = [f"{d.source!r} -> {d.output!r}" for d in decoded]
        if len(decoded) == 1:
            d = decoded[0]
            fig = attention_figure(d.alpha, list(d.source), labels[0], title=titles[0])
        else:
            fig = attention_grid_figure(
                [d.alpha for d in decoded],
                [list(d.source) for d in decoded],
                labels,
                titles=titles,
                ncols=args.cols,
            )
    else:
        if len(texts) != 1:
            raise CLIError(f"plot gates takes one TEXT, got {len(texts)}")
        out = model.translate(ids, max_len=task.max_target_len + 5)[0]
        out_text = task.decode(out)
        tgt = np.array([[*out, EOS]])
        model.forward(ids, tgt)  # teacher-forced on its own output: the decode's gates
        tr = model.trace[args.part]
        acts = {k: v[0, 0].T for k, v in tr.items()}  # layer 0, the one sequence: (H, T)
        fig = viz.gate_heatmaps(
            acts, model.config.arch, title=f"{args.part} gates: {texts[0]!r} -> {out_text!r}"
        )
    viz.save(fig, args.out)
    print(args.out)
    return 0


def _plot_connectivity(args: argparse.Namespace) -> int:
    """||d logit of each emitted token / d each source embedding||, from the real backward."""
    from gatescope import viz
    from gatescope.inspect.seq2seq import connectivity
    from gatescope.viz.seq2seq import connectivity_figure

    if len(args.texts) != 1:
        raise CLIError(f"plot connectivity takes one TEXT, got {len(args.texts)}")
    text = args.texts[0]
    model, task, _ = load(args.checkpoint)
    ids = task.encode([text])
    out = model.translate(ids, max_len=task.max_target_len + 5)[0]
    tokens = [task.decode([i]) for i in out] + (
        ["<eos>"] if len(out) < task.max_target_len + 5 else []
    )
    y = np.array([[*out, EOS][: len(tokens)]])  # the emitted tokens, EOS included
    conn = connectivity(model, ids, y)[0]  # (T, S)
    fig = connectivity_figure(
        conn, list(text), tokens, title=f"connectivity: {text!r} -> {task.decode(out)!r}"
    )
    viz.save(fig, args.out)
    print(args.out)
    return 0
