"""`gatescope export MODEL`: write a task model to ONNX, Keras or a gatescope checkpoint.

    gatescope export run.safetensors --onnx run.onnx --check   # runs it in onnxruntime too
    gatescope export run.safetensors --keras run.keras
    gatescope export tagger.onnx --checkpoint tagger.safetensors --task copy --length 30

MODEL is a model file from `gatescope train` (or `demo`), or a task model made elsewhere: a
.onnx graph or a .keras (or Keras 2 .h5) file holding a recurrent stack and a dense head (see
gatescope.interop). Written as a gatescope checkpoint with --task, a model from elsewhere
is one that `gatescope plot` and `gatescope explore` read like their own.
"""

from __future__ import annotations

import argparse
import os

from . import CLIError
from .args import HelpFormatter, add_task_arguments

CHECK_ATOL = 1e-4  # --check: onnxruntime runs float32; gatescope's float64 differs by ~1e-7


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a task model as ONNX, Keras or a gatescope checkpoint",
        description=(
            "Write a task model (a recurrent stack and its head) to other formats: ONNX (its "
            "LSTM/GRU/RNN operators; runs in onnxruntime), Keras 3 (.keras), or a gatescope "
            "checkpoint (from a .onnx or .keras model, for `gatescope plot` and `explore`)."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a gatescope model file, or a .onnx / .keras / .h5 task model",
    )
    p.add_argument("--onnx", metavar="OUT.onnx", help="write the model as an ONNX graph")
    p.add_argument(
        "--dtype",
        choices=("float32", "float64", "model"),
        default="float32",
        help="--onnx: the graph's floats (onnxruntime runs float32 only; 'model': as the model)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="--onnx: run the graph in onnxruntime on random inputs and compare with gatescope",
    )
    p.add_argument("--keras", metavar="OUT.keras", help="write the model as a Keras 3 file")
    p.add_argument(
        "--checkpoint",
        metavar="OUT.safetensors",
        help="write a gatescope model file (keeps MODEL's task, or --task)",
    )
    add_task_arguments(
        p, "--checkpoint: the task the model is for (its probe data for plot/explore)"
    )
    p.set_defaults(handler=handler)


def _suffix(flag: str, path: str | None, suffix: str) -> None:
    if path is not None and not path.lower().endswith(suffix):
        raise CLIError(f"--{flag} must name a {suffix} file, got {path!r}")


def handler(args: argparse.Namespace) -> int:
    if not (args.onnx or args.keras or args.checkpoint):
        raise CLIError("nothing to write: give --onnx, --keras or --checkpoint")
    _suffix("onnx", args.onnx, ".onnx")
    _suffix("keras", args.keras, ".keras")
    if (args.task or args.length) and not args.checkpoint:
        raise CLIError("--task and --length go with --checkpoint")
    if args.length and not args.task:
        raise CLIError("--length needs --task")
    if not os.path.isfile(args.model):
        raise CLIError(f"{args.model}: no such file")
    try:
        return _export(args)
    except ImportError as e:  # an optional dependency (the message names the extra)
        raise CLIError(str(e)) from None


def _export(args: argparse.Namespace) -> int:
    from gatescope.interop import load_model_file, to_keras, to_onnx
    from gatescope.model import save_model

    model, meta = load_model_file(args.model)
    if args.onnx:
        to_onnx(model, args.onnx, dtype=None if args.dtype == "model" else args.dtype)
        print(args.onnx)
        if args.check:
            print(f"onnxruntime: max |difference| {_check_onnx(model, args.onnx):.2e}")
    if args.keras:
        to_keras(model).save(args.keras)
        print(args.keras)
    if args.checkpoint:
        extra = {k: v for k, v in meta.items() if k not in ("type", "model")}
        if args.task:
            extra["task"] = task_for(model, args.task, args.length).to_dict()
        save_model(args.checkpoint, model, meta=extra)
        print(args.checkpoint)
    return 0


def task_for(model, name: str, length: int | None):
    """The task `name` (`length` steps), checked to fit `model`: input size, output size and
    kind. For any command that runs a model from elsewhere on a task's probe data."""
    from gatescope.tasks import get_task

    task = get_task(name, length)
    c = model.config
    for what, mine, its in (
        ("input size", c.input_size, task.input_size),
        ("output size", c.output_size, task.output_size),
        ("kind", c.kind, task.kind),
    ):
        if mine != its:
            raise CLIError(f"--task {name}: the task's {what} is {its!r}, the model's {mine!r}")
    return task


def _check_onnx(model, path: str) -> float:
    """Largest |onnxruntime - gatescope| on 4 random sequences of 12 steps."""
    import numpy as np

    from gatescope.interop._extras import require

    ort = require("onnxruntime", "onnx", "--check")
    x = np.random.default_rng(0).normal(size=(4, 12, model.config.input_size))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    elem = session.get_inputs()[0].type  # "tensor(float)" or "tensor(double)"
    try:
        (got,) = session.run(None, {"x": x.astype(np.float64 if "double" in elem else np.float32)})
    except Exception as e:  # onnxruntime's own errors, e.g. no double kernel for LSTM
        raise CLIError(f"--check: onnxruntime cannot run {path}: {e}") from None
    diff = float(np.max(np.abs(got - model(x.astype(model.dtype)))))
    if not diff <= CHECK_ATOL:
        raise CLIError(f"{path}: onnxruntime differs from gatescope by {diff:.2e}")
    return diff
