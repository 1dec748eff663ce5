"""Gate-block reordering shared by the Keras and ONNX converters.

Every framework packs its gates as H-row (or H-column) blocks of one matrix; only the order
differs. gatescope's orders are PyTorch's: LSTM i f g o, GRU r z n.
"""

from __future__ import annotations

import numpy as np

# gatescope's block order per architecture (the letters name the same gate everywhere:
# LSTM i input, f forget, g candidate, o output; GRU r reset, z update, n candidate)
GATESCOPE_ORDER = {"lstm": "ifgo", "gru": "rzn", "rnn": "h"}


def reorder(a: np.ndarray, src: str, dst: str, axis: int = 0) -> np.ndarray:
    """Blocks of `a` along `axis`, packed in order `src`, repacked in order `dst`.

    `reorder(w, "iofg", "ifgo")` turns ONNX's LSTM W (4H, D) into gatescope's weight_ih.
    """
    if sorted(src) != sorted(dst):
        raise ValueError(f"block orders {src!r} and {dst!r} name different gates")
    blocks = dict(zip(src, np.split(a, len(src), axis=axis), strict=True))
    return np.ascontiguousarray(np.concatenate([blocks[g] for g in dst], axis=axis))
