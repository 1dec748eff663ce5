"""`gatescope charlm train | sample | eval`: a character-level language model on real text."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from . import CLIError
from .args import (
    HelpFormatter,
    add_checkpoint_or_pretrained,
    add_threads_argument,
    checkpoint_or_pretrained,
    fraction,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)

# Model and data options: None on the command line means "the default" for a new run and
# "the checkpoint's value" for --resume (where giving a different value is an error).
TRAIN_DEFAULTS: dict[str, Any] = {
    "arch": "lstm",
    "layers": 2,
    "hidden": 128,
    "dtype": "float32",
    "seq_len": 64,
    "batch": 32,
    "lr": 1e-2,
    "clip": 5.0,
    "lr_decay": 0.5,
    "seed": 0,
    "val_fraction": 0.05,
    "max_vocab": 100,
    "min_count": 1,
}
DEFAULT_MINUTES = 5.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "charlm",
        help="a character-level language model on real text: train, sample, eval",
        description="A character-level language model (stacked LSTM, GRU or RNN) trained with "
        "truncated backprop through time; by default on Python's own standard library.",
    )
    p.set_defaults(handler=lambda args: p.print_help() or 0)
    cmds = p.add_subparsers(dest="charlm_command", metavar="SUBCOMMAND", parser_class=type(p))
    fmt = HelpFormatter

    t = cmds.add_parser("train", help="train (or --resume) a model", formatter_class=fmt)
    t.add_argument(
        "--corpus",
        nargs="+",
        metavar="PATH",
        help="text files or folders (default: the running Python's standard-library *.py); "
        "with --resume: where the checkpoint's corpus is now, if it moved (same text)",
    )
    t.add_argument(
        "--glob", help="only take files matching this from folders, e.g. '*.py' (default: all)"
    )
    t.add_argument("--arch", choices=("lstm", "gru", "rnn"), help="recurrent layer (default: lstm)")
    t.add_argument("--layers", type=positive_int, help="stacked layers (default: 2)")
    t.add_argument("--hidden", type=positive_int, help="units per layer (default: 128)")
    t.add_argument(
        "--embed",
        type=positive_int,
        metavar="E",
        help="read characters through a learned E-wide embedding (default: one-hot)",
    )
    budget = t.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes",
        type=positive_float,
        help=f"train for this many minutes (default {DEFAULT_MINUTES:g} when --steps is not given)",
    )
    budget.add_argument("--steps", type=positive_int, help="train until this step (in total)")
    t.add_argument(
        "--seq-len", type=positive_int, help="truncated-BPTT chunk length T (default: 64)"
    )
    t.add_argument("--batch", type=positive_int, help="parallel streams B (default: 32)")
    t.add_argument("--lr", type=positive_float, help="Adam's initial learning rate (default: 0.01)")
    t.add_argument(
        "--lr-decay",
        type=positive_float,
        help="multiply the lr by this (down to 1e-4) when a validation does not beat the best "
        "so far (default: 0.5; 1: never)",
    )
    t.add_argument("--clip", type=positive_float, help="gradient-norm clipping (default: 5)")
    t.add_argument("--seed", type=int, help="initialisation and corpus-split seed (default: 0)")
    t.add_argument(
        "--val-fraction", type=fraction, help="held-out share of the text (default: 0.05)"
    )
    t.add_argument(
        "--max-vocab", type=positive_int, help="vocabulary cap, unknown included (default: 100)"
    )
    t.add_argument("--min-count", type=positive_int, help="min occurrences of a char (default: 1)")
    t.add_argument("--dtype", choices=("float32", "float64"), help="(default: float32)")
    t.add_argument("--eval-every", type=positive_int, default=100, help="steps between validations")
    t.add_argument(
        "--eval-chars", type=positive_int, default=50_000, help="validation chars measured"
    )
    t.add_argument(
        "--sample-every", type=nonnegative_int, default=500, help="steps between samples (0: none)"
    )
    add_threads_argument(t, "BLAS threads", also="gatescope --threads, ")
    t.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue training --out (with --corpus: the same text, moved to another place)",
    )
    t.add_argument("--force", action="store_true", help="overwrite an existing --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(handler=train_handler)

    s = cmds.add_parser("sample", help="generate text from a checkpoint", formatter_class=fmt)
    add_checkpoint_or_pretrained(s)
    s.add_argument(
        "--prime", default="", help="text the model reads first, printed too (default: a newline)"
    )
    s.add_argument(
        "--temperature", type=nonnegative_float, default=0.8, help="0 picks the likeliest char"
    )
    s.add_argument("--length", type=positive_int, default=500, help="characters to generate")
    s.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    s.set_defaults(handler=sample_handler)

    e = cmds.add_parser("eval", help="bits per character on a text", formatter_class=fmt)
    add_checkpoint_or_pretrained(e)
    e.add_argument("--text", nargs="+", required=True, metavar="PATH", help="files or folders")
    e.add_argument("--glob", help="only take files matching this from folders")
    e.add_argument("--json", action="store_true", help="print a JSON object")
    e.set_defaults(handler=eval_handler)


# ----------------------------------------------------------------------------- train


def _effective(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k: (getattr(args, k) if getattr(args, k) is not None else d)
        for k, d in TRAIN_DEFAULTS.items()
    }


def _check_resume_options(args: argparse.Namespace, meta: dict[str, Any]) -> None:
    """Options given with --resume must agree with the checkpoint."""
    m, t, c = meta["model"], meta["train"], meta["corpus"]
    saved = {
        "arch": m["arch"],
        "layers": m["num_layers"],
        "hidden": m["hidden_size"],
        "dtype": m["dtype"],
        "seq_len": meta["task"]["length"],
        "batch": t["batch_size"],
        "lr": t["lr"],
        "lr_decay": t["lr_decay"],
        "clip": t["clip_norm"],
        "seed": t["seed"],
        "val_fraction": c["val_fraction"],
        "max_vocab": c["max_vocab"],
        "min_count": c["min_count"],
    }
    if args.embed is not None and args.embed != m.get("embed_size"):
        raise CLIError(
            f"--embed {args.embed} differs from the checkpoint's "
            f"{m.get('embed_size') or 'one-hot input'}; leave it out to resume"
        )
    for key, value in saved.items():
        given = getattr(args, key)
        if given is not None and given != value:
            flag = "--" + key.replace("_", "-")
            raise CLIError(
                f"{flag} {given} differs from the checkpoint's {value}; leave it out to resume"
            )
    if args.glob is not None:
        raise CLIError("--glob cannot change on --resume (the checkpoint names it)")


def train_handler(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gatescope import charlm as cl
    from gatescope.model import load_model
    from gatescope.threads import limit_blas_threads
    from gatescope.train import TrainConfig, fit, resume_state

    console = Console(highlight=False, soft_wrap=True)
    out = Path(args.out)
    if args.resume and args.force:
        raise CLIError("give --resume or --force, not both")
    if args.resume and not out.exists():
        raise CLIError(f"--resume: {args.out} does not exist")
    if not args.resume and out.exists() and not args.force:
        raise CLIError(
            f"{args.out} exists; pass --resume to continue training it or --force to start over"
        )
    if not out.parent.is_dir():
        raise CLIError(f"--out: folder {str(out.parent)!r} does not exist")

    with limit_blas_threads(args.threads, override_env=True):
        if args.resume:
            _, meta = load_model(out)
            if not cl.is_charlm(meta):
                raise CLIError(
                    f"{args.out}: not a character-level language model; `gatescope train "
                    "--resume` continues task models"
                )
            _check_resume_options(args, meta)
            try:
                task, model, config, state = resume_state(out, corpus_paths=args.corpus)
            except ValueError as e:
                hint = (
                    ""
                    if args.corpus
                    else "; if the corpus moved, give where it is now with --corpus PATH"
                )
                raise CLIError(f"{e}{hint}") from None
            console.print(
                f"resuming {args.out} at step {state.step} ({state.seconds / 60:.1f} min)"
            )
            config = TrainConfig(
                **{
                    **config.to_dict(),
                    "eval_every": args.eval_every,
                    "checkpoint_every": args.eval_every,
                    "sample_every": args.sample_every,
                }
            )
            task = cl.TextTask(task.corpus, seq_len=task.length, eval_chars=args.eval_chars)
        else:
            o = _effective(args)
            spec = cl.CorpusSpec(
                paths=tuple(str(Path(p).resolve()) for p in (args.corpus or ())),
                glob=args.glob,
                val_fraction=o["val_fraction"],
                seed=o["seed"],
                max_vocab=o["max_vocab"],
                min_count=o["min_count"],
            )
            with console.status("reading the corpus"):
                corpus = cl.load_corpus(spec)
            task = cl.TextTask(corpus, seq_len=o["seq_len"], eval_chars=args.eval_chars)
            config = TrainConfig(
                steps=None,
                batch_size=o["batch"],
                lr=o["lr"],
                optimizer="adam",
                clip_norm=o["clip"],
                seed=o["seed"],
                eval_every=args.eval_every,
                checkpoint_every=args.eval_every,
                early_stop=False,
                carry_state=True,
                lr_decay=o["lr_decay"],
                min_gain=0.0,
                min_lr=1e-4,
                sample_every=args.sample_every,
            )
            model = cl.new_model(
                corpus.vocab.size,
                o["arch"],
                o["hidden"],
                o["layers"],
                o["dtype"],
                seed=o["seed"],
                encoding="one_hot" if args.embed is None else "embedding",
                embed_size=args.embed,
            )
            state = None
        corpus = task.corpus
        steps_per_pass = task.steps_per_pass(config.batch_size)  # too short a text fails here
        s = corpus.summary()
        where = ", ".join(corpus.spec.paths) or f"{cl.default_corpus_root()} (*.py)"
        console.print(
            f"corpus {where}: {s['files']} files ({s['skipped_files']} empty or not text "
            f"skipped); train {s['train_files']} files, {s['train_chars']:,} chars; validation "
            f"{s['val_files']} files, {s['val_chars']:,} chars; vocabulary {s['vocab_size']}"
        )
        c = model.config
        lr = state.optimizer_state[f"{config.optimizer}.hp.lr"][0] if state else config.lr
        embedded = f", embedding {c.embed_size}" if c.encoding == "embedding" else ""
        console.print(
            f"model {c.arch} {c.num_layers}x{c.hidden_size}{embedded} ({model.num_params():,} params, "
            f"{c.dtype}); B={config.batch_size} streams x T={task.length}, Adam lr "
            f"{lr:g} (x{config.lr_decay:g} on plateaus), clip {config.clip_norm:g}; "
            f"{steps_per_pass:,} steps per pass over the text"
        )
        max_seconds = args.minutes * 60 if args.minutes is not None else None
        if args.steps is None and max_seconds is None:
            max_seconds = DEFAULT_MINUTES * 60
        done = state.step if state is not None else 0
        if args.steps is not None and args.steps <= done:
            raise CLIError(f"--steps {args.steps}: the checkpoint is already at step {done}")
        config = TrainConfig(**{**config.to_dict(), "steps": args.steps})
        result = fit(
            task,
            model,
            config,
            checkpoint_path=out,
            progress=not args.no_progress,
            state=state,
            log=lambda text: console.print(text, markup=False),
            time_limit=max_seconds,
        )
    if result.stop_reason == "diverged":
        console.print(f"error: {result.message} (--lr, --clip)", markup=False)
        return 1
    console.print(
        f"saved {args.out}: step {result.steps}, validation "
        f"{result.metrics['bits_per_char']:.3f} bits/char after {result.seconds / 60:.1f} min"
    )
    return 0


# ----------------------------------------------------------------------------- sample, eval


def sample_handler(args: argparse.Namespace) -> int:
    from gatescope import charlm as cl

    model, vocab, _ = cl.load_charlm(checkpoint_or_pretrained(args))
    text = cl.sample(
        model,
        vocab,
        prime=args.prime,
        length=args.length,
        temperature=args.temperature,
        seed=args.seed,
    )
    print(args.prime + text)
    return 0


def eval_handler(args: argparse.Namespace) -> int:
    from gatescope import charlm as cl

    model, vocab, meta = cl.load_charlm(checkpoint_or_pretrained(args))
    files = cl.find_text_files(args.text, args.glob)
    parts = []
    for f in files:
        text = cl.read_text_file(f)
        if text is None:
            raise CLIError(f"{f}: not a UTF-8 text file")
        parts.append(text)
    ids = vocab.encode("".join(parts))
    if ids.size < 2:
        raise CLIError("--text holds fewer than 2 characters; nothing to predict")
    bpc, n = cl.bits_per_char(model, ids)
    result = {
        "bits_per_char": bpc,
        "predictions": n,
        "files": [os.fspath(f) for f in files],
        "unknown_chars": int((ids == 0).sum()),
        "checkpoint": {"step": meta.get("step"), "model": _model_summary(meta)},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{bpc:.4f} bits per character over {n:,} predictions in {len(files)} file(s) "
            f"({result['unknown_chars']} unknown chars)"
        )
    return 0


def _model_summary(meta: dict[str, Any]) -> dict[str, Any]:
    """The model as 0.1.0's `charlm eval --json` described it (vocab_size, arch, ...)."""
    m = meta["model"]
    return {
        "vocab_size": m["input_size"],
        "arch": m["arch"],
        "hidden_size": m["hidden_size"],
        "num_layers": m["num_layers"],
        "dtype": m["dtype"],
        "encoding": m.get("encoding", "dense"),
    }
