"""`gatescope plot`: draw one instrument for a saved model.

    gatescope plot gates     run.safetensors --out gates.png     # heatmaps of one sequence
    gatescope plot traces    run.safetensors                     # mean gates over time
    gatescope plot gradflow  run.safetensors                     # measured ||dL/dh_t||
    gatescope plot saturation run.safetensors                    # Karpathy et al.'s scatter

The checkpoint is a model file written by `gatescope train` or `gatescope demo`; its
metadata names the task, from which the probe sequences are drawn (`--seed`, `--batch`).
A task model from elsewhere, a .onnx graph or a .keras (.h5) file holding a recurrent stack
and a dense head, is read too; it names no task, so give one:

    gatescope plot gates tagger.onnx --task recall --length 8 --out gates.png
"""

from __future__ import annotations

import argparse
import os
import sys

from . import CLIError
from .args import add_task_arguments, nonnegative_int, positive_int

KINDS = ("gates", "traces", "gradflow", "saturation")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw gates, gate traces, gradient flow or saturation of a saved model",
        description=(
            "Draw one instrument for a model checkpoint (from `gatescope train` or "
            "`gatescope demo`) on sequences of the task it was trained on."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("what", choices=KINDS, help="which figure")
    p.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="model file (.safetensors), or a .onnx / .keras / .h5 task model (with --task)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="PNG to write (default: CKPT-WHAT.png in the current folder)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the probe data")
    p.add_argument(
        "--batch", type=positive_int, default=64, help="probe sequences (traces, gradflow, ...)"
    )
    p.add_argument(
        "--index", type=nonnegative_int, default=0, help="which probe sequence `gates` shows"
    )
    add_task_arguments(
        p, "the task whose sequences probe the model (needed for .onnx / .keras files)"
    )
    p.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    from gatescope import viz
    from gatescope.charlm import is_charlm
    from gatescope.interop import load_model_file
    from gatescope.tasks import task_from_dict

    from .export import task_for

    if not os.path.isfile(args.checkpoint):
        raise CLIError(f"{args.checkpoint}: no such file")
    out = (
        getattr(args, "out", None)
        or f"{os.path.splitext(os.path.basename(args.checkpoint))[0]}-{args.what}.png"
    )
    if not out.lower().endswith(".png"):
        raise CLIError(f"--out must name a .png file, got {out!r}")
    if args.index >= args.batch:
        raise CLIError(f"--index must be < --batch ({args.batch}), got {args.index}")
    if args.length and not args.task:
        raise CLIError("--length needs --task")
    try:
        model, meta = load_model_file(args.checkpoint)
    except ImportError as e:  # an optional dependency (the message names the extra)
        raise CLIError(str(e)) from None
    if args.task:
        if is_charlm(meta):
            raise CLIError(f"{args.checkpoint} is a language model: it reads text, not --task")
        task = task_for(model, args.task, args.length)
    elif not isinstance(meta.get("task"), dict):
        raise CLIError(
            f"{args.checkpoint}: the file names no task, so there is nothing to run it on: "
            "pass --task NAME (and --length T)"
        )
    elif is_charlm(meta):
        task = _text_task(args.checkpoint, model, meta)
    else:
        task = task_from_dict(meta["task"])
    name = os.path.splitext(os.path.basename(args.checkpoint))[0]
    fig = plot_figure(
        model, task, args.what, seed=args.seed, batch=args.batch, index=args.index, name=name
    )
    viz.save(fig, out)
    print(out)
    return 0


def _text_task(path: str, model, meta: dict):
    """A char LM's probe text: its validation text, or (when its corpus cannot be read here)
    its own sample; as a TextTask whose batches are windows of it."""

    from gatescope.charlm import sample
    from gatescope.tasks.text import (
        Corpus,
        TextTask,
        corpus_from_meta,
        spec_from_meta,
        vocab_from_meta,
    )

    vocab = vocab_from_meta(meta)
    try:
        corpus = corpus_from_meta(meta)
    except (ValueError, OSError) as e:
        print(
            f"{path}: its corpus cannot be read ({e}); probing with its own sample", file=sys.stderr
        )
        ids = vocab.encode("\n" + sample(model, vocab, length=4000, temperature=0.8, seed=0))
        corpus = Corpus(spec_from_meta(meta), vocab, [], [], ids, ids, 0, "")
    return TextTask(corpus, seq_len=int(meta["task"].get("length", 64)))


def plot_figure(
    model, task, what: str, *, seed: int = 0, batch: int = 64, index: int = 0, name: str = ""
):
    """The figure `gatescope plot WHAT` draws for `model` on `batch` sequences of `task`.

    The probe sequences are `task.make_batch(batch, np.random.default_rng(seed))`; the
    measurements run on a float64 copy of the model.
    """
    import numpy as np

    from gatescope import inspect as gi
    from gatescope import viz
    from gatescope.demo import float64_copy
    from gatescope.model import SequenceModel
    from gatescope.tasks import Batch
    from gatescope.viz.style import ARCH_NAMES

    model = float64_copy(model)
    arch = model.config.arch
    layer = model.recurrent
    probe = task.make_batch(batch, np.random.default_rng(seed))
    if model.config.encoding != "dense":  # the instruments read what the stack reads
        probe = Batch(model.encode(probe.x), probe.y, probe.mask)
        model = model.as_dense()
        layer = model.recurrent
    label = ARCH_NAMES[arch]
    where = f"{name + ': ' if name else ''}{label}, {task.name} T={task.length}"
    if what == "gates":
        acts = gi.gate_activations(layer, probe.x[index])
        return viz.gate_heatmaps(acts, arch, title=f"{where}, sequence {index}")
    if what == "traces":
        traces = gi.gate_traces(layer, probe.x)
        return viz.gate_traces_figure(traces, arch, title=f"{where}: mean over {batch} sequences")
    if what == "gradflow":
        fresh = SequenceModel(model.config, seed=0)
        flows = {
            "fresh initialisation (seed 0)": {arch: gi.model_gradient_flow(fresh, probe)},
            "this model": {arch: gi.model_gradient_flow(model, probe)},
        }
        return viz.gradient_flow_figure(flows, title=f"{where}: measured gradient flow")
    if what == "saturation":
        if not gi.GATES[arch]:
            raise CLIError(
                f"{name or 'this model'}: a vanilla RNN has no gates to show saturation for"
            )
        sat = gi.saturation(layer, probe.x)
        return viz.saturation_figure(sat, arch, title=f"{where}: saturation")
    raise CLIError(f"unknown figure {what!r}; expected one of {', '.join(KINDS)}")
