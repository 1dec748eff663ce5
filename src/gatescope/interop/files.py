"""One loader for every model file gatescope can look inside: its own checkpoints, ONNX
graphs and Keras `.keras` files, each returned as ``(SequenceModel, meta)``."""

from __future__ import annotations

import os
from typing import Any

from ..model import SequenceModel, load_model
from ._extras import require_keras
from .keras import from_keras
from .onnx import read_onnx

SUFFIXES = (".onnx", ".keras", ".h5")  # the foreign formats load_model_file recognises


def load_model_file(
    path: str | os.PathLike[str], kind: str | None = None
) -> tuple[SequenceModel, dict[str, Any]]:
    """A task model (recurrent stack + dense head) from a ``.onnx``, ``.keras`` (or Keras 2
    ``.h5``) or gatescope checkpoint file, and its metadata.

    ONNX and Keras files must hold a recurrent stack with a dense head (see `from_onnx`,
    `from_keras`); the kind is inferred from where the head reads (last step:
    classify_last, or regress_last for one linear output; every step: classify_steps), or
    given as `kind` (Keras only). Their ``meta`` has ``"source"`` ("onnx" or "keras") and no
    ``"task"``: the caller chooses the inputs to run. Other files go to
    :func:`gatescope.model.load_model`. Raises ValueError for a file that holds no such
    model (a bare recurrent stack, an unsupported graph), naming the file.
    """
    path_str = os.fspath(path)
    suffix = os.path.splitext(path_str)[1].lower()
    if suffix == ".onnx":
        if kind is not None:
            raise ValueError("kind: an ONNX model's kind is read from its graph")
        model, meta = read_onnx(path_str)
    elif suffix in (".keras", ".h5"):  # .h5: Keras 2's files, which Keras 3 still reads
        keras = require_keras(f"loading a {suffix} file")
        km = keras.saving.load_model(path_str, compile=False)
        model = from_keras(km, kind=kind)
        meta = {"source": "keras", "path": path_str, "name": km.name}
        head = km.layers[-1]
        if type(head).__name__ == "Dense":
            meta["output_activation"] = (
                None if head.get_config()["activation"] == "linear" else "softmax"
            )
    else:
        if kind is not None:
            raise ValueError("kind: a gatescope model file records its kind")
        return load_model(path_str)
    if not isinstance(model, SequenceModel):
        raise ValueError(
            f"{path_str}: holds a recurrent stack without a dense head; a task model needs "
            "one (load the stack with gs.from_onnx / gs.from_keras instead)"
        )
    meta["model"] = model.config.to_dict()
    return model, meta
