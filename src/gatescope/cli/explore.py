"""`gatescope explore CKPT`: write the gate explorer, one self-contained HTML page.

A character language model (from `gatescope charlm train`) reads a text: --text PATH, or
by default the start of the validation text of the corpus it was trained on. A task model
(from `gatescope train`) reads --task-samples fresh samples of its task. A task model from
elsewhere (.onnx, .keras or .h5: a recurrent stack and a dense head) names no task: give
--task NAME (and --length T). A sequence-to-sequence model (from `gatescope seq2seq train`)
translates each --text TEXT (the text itself; repeat --text for several, one page with a
selector), by default --task-samples held-out sources of its task (4).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import CLIError
from .args import (
    HelpFormatter,
    add_checkpoint_or_pretrained,
    add_task_arguments,
    checkpoint_or_pretrained,
    nonnegative_int,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explore",
        help="write an interactive gate explorer: one self-contained HTML file",
        description=(
            "Write one HTML file (scripts, styles and data inside; it loads nothing from the "
            "network) to browse every unit of a trained model: the text coloured by a unit, "
            "a unit table with feature correlations, a heatmap of all units, and the measured "
            "influence of earlier inputs on chosen positions."
        ),
        formatter_class=HelpFormatter,
    )
    add_checkpoint_or_pretrained(
        p,
        help="a model file from `gatescope train` or `gatescope charlm train`, or a .onnx / "
        ".keras / .h5 task model (with --task)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--text",
        metavar="PATH|TEXT",
        action="append",
        help="language models: the UTF-8 text file to read (default: the start of the model's "
        "validation text); seq2seq models: a text to translate (repeat for several)",
    )
    src.add_argument(
        "--task-samples",
        metavar="N",
        type=positive_int,
        help="task models: how many fresh samples of the task to show (default 6; seq2seq: "
        "held-out sources, default 4)",
    )
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="output",
        metavar="PATH",
        default="explorer.html",
        help="the HTML file to write",
    )
    p.add_argument(
        "--max-chars",
        metavar="N",
        type=positive_int,
        default=20_000,
        help="read at most this many characters of the text",
    )
    p.add_argument(
        "--grad-positions",
        metavar="N",
        type=nonnegative_int,
        default=256,
        help="positions, spread over the text, whose input influence is measured (0: none)",
    )
    p.add_argument(
        "--grad-window",
        metavar="W",
        type=positive_int,
        default=100,
        help="how many steps back the influence is measured",
    )
    p.add_argument(
        "--bits",
        type=int,
        choices=(8, 16),
        default=None,
        help="bits per stored value (default: 16, or 8 for large files)",
    )
    p.add_argument(
        "--quantities",
        metavar="Q,Q",
        default=None,
        help="store only these quantities, e.g. h,c (LSTM h c i f o g; GRU h z r n; RNN h): smaller pages",
    )
    p.add_argument(
        "--top-k", metavar="K", type=positive_int, default=5, help="predictions shown on hover"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the task samples")
    add_task_arguments(p, "task models: the task to sample (needed for .onnx / .keras files)")
    p.add_argument(
        "--title", default=None, help="the page title (default: the checkpoint's file name)"
    )
    p.set_defaults(handler=handler)


def _read_text(path: str, max_chars: int) -> tuple[str, int]:
    from gatescope.tasks.text import read_text_file

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--text {path}: no such file")
    text = read_text_file(p)
    if text is None:
        raise CLIError(f"--text {path}: not a UTF-8 text file")
    if not text:
        raise CLIError(f"--text {path}: the file is empty")
    return text[:max_chars], len(text)


def default_text(meta: dict, vocab: Any, max_chars: int, model: Any = None) -> tuple[str, str]:
    """The start of a char LM's validation text, and a phrase saying what it is.

    When the corpus the checkpoint names cannot be read here (moved, or another machine),
    with ``model`` given: the model's own sample (temperature 0.8, seed 0), said so."""
    from gatescope import charlm
    from gatescope.tasks.text import load_corpus, spec_from_meta

    try:
        corpus = load_corpus(spec_from_meta(meta), vocab=vocab)
    except (KeyError, TypeError, ValueError, OSError) as e:
        if model is None:
            raise CLIError(
                f"cannot read the model's validation text ({e}); pass --text PATH"
            ) from None
        n = min(max_chars, 2000)
        text = "\n" + charlm.sample(model, vocab, length=n - 1, temperature=0.8, seed=0)
        return text, (
            f"the model's own sample of {n:,} characters (its corpus cannot be read here: "
            f"{e}; --text PATH reads another text)"
        )
    text = vocab.decode(corpus.val_ids[:max_chars])
    first = Path(corpus.val_files[0]).name if corpus.val_files else "validation text"
    return text, f"the first {len(text):,} characters of the validation text ({first}, …)"


def handler(args: argparse.Namespace) -> int:
    from gatescope.charlm import is_charlm, load_charlm
    from gatescope.checkpoint import load_checkpoint
    from gatescope.interop import SUFFIXES, load_model_file
    from gatescope.model import LEGACY_CHARLM_KIND, MODEL_FILE_TYPE, load_model
    from gatescope.seq2seq import MODEL_FILE_TYPE as SEQ2SEQ_FILE_TYPE
    from gatescope.viz import explorer

    from .export import task_for

    path = checkpoint_or_pretrained(args)
    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    if args.length and not args.task:
        raise CLIError("--length needs --task")
    if os.path.splitext(path)[1].lower() in SUFFIXES:  # a model from elsewhere
        try:
            model, meta = load_model_file(path)
        except ImportError as e:  # an optional dependency (the message names the extra)
            raise CLIError(str(e)) from None
        if not args.task:
            raise CLIError(
                f"{path}: a model from elsewhere names no task: pass --task NAME (and --length T)"
            )
    else:
        _, meta = load_checkpoint(path)  # raises CheckpointError (a ValueError) with the reason
        if meta.get("type") == SEQ2SEQ_FILE_TYPE:
            return _seq2seq(args, path)
        if meta.get("type") != MODEL_FILE_TYPE and meta.get("kind") != LEGACY_CHARLM_KIND:
            raise CLIError(
                f"{path}: not a model file gatescope can explore (neither `gatescope train` nor "
                "`gatescope charlm train` wrote it)"
            )
        model, meta = load_model(path)
    title = args.title or f"{Path(path).name}"
    options = {
        "grad_positions": args.grad_positions,
        "grad_window": args.grad_window,
        "bits": args.bits,
        "top_k": args.top_k,
        "quantities": [q.strip() for q in args.quantities.split(",") if q.strip()]
        if args.quantities
        else None,
    }
    started = time.perf_counter()
    if is_charlm(meta):
        if args.task:
            raise CLIError(f"{path} is a language model: it reads text (--text PATH), not --task")
        if args.task_samples is not None:
            raise CLIError(
                f"{path} is a language model: it reads text (--text PATH), not --task-samples"
            )
        model, vocab, meta = load_charlm(path)
        notes = []
        if args.text and len(args.text) > 1:
            raise CLIError(f"{path} is a language model: it reads one text (one --text PATH)")
        if args.text:
            text, total = _read_text(args.text[0], args.max_chars)
            source = Path(args.text[0]).name
            if total > len(text):
                notes.append(
                    f"The text is the first {len(text):,} of {total:,} characters of {source} (--max-chars)."
                )
        else:
            text, source = default_text(meta, vocab, args.max_chars, model)
            notes.append(f"The text is {source}.")
        print(f"reading {len(text):,} characters with {title} ...", file=sys.stderr)
        data = explorer.from_charlm(
            model, vocab, text, title=title, details={"source": source}, notes=notes, **options
        )
    else:
        from gatescope.tasks import task_from_dict

        if args.text:
            raise CLIError(
                f"{path} is a task model: it reads samples of its task (--task-samples N), not --text"
            )
        if args.task:
            task = task_for(model, args.task, args.length)
        elif "task" not in meta:
            raise CLIError(
                f"{path}: the checkpoint does not say which task the model was trained on: "
                "pass --task NAME (and --length T)"
            )
        else:
            task = task_from_dict(meta["task"])
        n = args.task_samples or 6
        import numpy as np

        batch = task.make_batch(n, np.random.default_rng(args.seed))
        details = {}
        if isinstance(meta.get("step"), int):
            details["trained"] = f"{meta['step']:,} steps"
        data = explorer.from_sequence_model(
            model, task, batch, title=title, details=details, **options
        )
    size = explorer.write_html(args.output, data)
    seconds = time.perf_counter() - started
    print(f"wrote {args.output} ({size / 1e6:.1f} MB, {seconds:.1f} s): {explorer.summary(data)}")
    return 0


def _seq2seq(args: argparse.Namespace, path: str) -> int:
    """The page of a `gatescope seq2seq train` checkpoint: --text TEXT (repeatable) or
    --task-samples held-out sources of its task."""
    from gatescope.viz import explorer

    from .seq2seq import load

    if args.task or args.length:
        raise CLIError(f"{path} is a seq2seq model: it names its task; --task is not needed")
    model, task, meta = load(path)
    notes = []
    if args.text:
        texts = list(args.text)
    else:
        n = args.task_samples or 4
        texts = [s for s, _ in task.pairs(n, args.seed, heldout=True)]
        notes.append(
            f"The texts are {n} held-out sources of the {task.name} task (--seed {args.seed})."
        )
    title = args.title or Path(path).name
    details = {"trained": f"{meta['step']:,} steps"} if isinstance(meta.get("step"), int) else {}
    started = time.perf_counter()
    data = explorer.from_seq2seq(
        model,
        task,
        texts,  # ValueError naming characters outside the source vocabulary
        top_k=args.top_k,
        bits=args.bits,
        quantities=[q.strip() for q in args.quantities.split(",") if q.strip()]
        if args.quantities
        else None,
        title=title,
        details=details,
        notes=notes,
    )
    size = explorer.write_html(args.output, data)
    seconds = time.perf_counter() - started
    print(f"wrote {args.output} ({size / 1e6:.2f} MB, {seconds:.1f} s): {explorer.summary(data)}")
    return 0
