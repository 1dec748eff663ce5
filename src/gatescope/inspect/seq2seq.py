"""Instruments for a `gatescope.seq2seq.Seq2Seq`: arrays only (figures in `gatescope.viz`).

    from gatescope.inspect.seq2seq import connectivity
    conn = connectivity(model, src)          # (B, T, S): ||d logit_t / d e_s|| per example

Shape legend: B batch, S source steps, T target steps, E embedding, V target vocabulary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gatescope.seq2seq import EOS, PAD, Seq2Seq

__all__ = ["connectivity"]


def connectivity(model: Seq2Seq, src: Any, tgt: Any = None, *, max_rows: int = 2048) -> np.ndarray:
    r"""Measured connectivity: how strongly each source position reaches each output.

    For example b, target step t and source position s::

        conn[b, t, s] = || d logit_t[y_t] / d e_s ||_2

    where e_s (E) is the embedded source token at position s (the one-hot row with
    ``encoding="one_hot"``) and logit_t[y_t] is the logit, before the softmax, of the token
    at target step t under teacher forcing on ``y``. With ``tgt=None`` y is the model's own
    greedy decode followed by EOS (when it emitted one), so y_t is the token it *emitted* at
    step t (teacher forcing on its own output reproduces the greedy decode exactly); with
    ``tgt`` (B, T) given, y = tgt and the logit is that of the reference token. Steps where
    y is PAD, and PAD source positions, are exactly 0. Source positions are indexed as the
    source is written, also for a model with ``reverse_source``.

    Each entry comes from the real backward pass (`Seq2Seq.backward` with dlogits one-hot on
    (t, y_t), read out as ``model.d_source``). Rows of different examples never interact, so
    the (example, step) pairs are stacked into one batch (at most ``max_rows`` rows per
    forward and backward) and all of them are differentiated in one backward pass.

    Returns float64 (B, T, S). The model's last forward (``trace``, ``attention``) is that
    of the stacked batch afterwards; ``grads`` are left as they were.
    """
    if not isinstance(model, Seq2Seq):
        raise ValueError(f"model must be a gatescope.seq2seq.Seq2Seq, got {type(model).__name__}")
    if not isinstance(max_rows, int | np.integer) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive int, got {max_rows!r}")
    src = np.asarray(src)
    if src.ndim != 2:
        raise ValueError(f"src must be a (batch, time) array of int ids, got shape {src.shape}")
    B, S = src.shape
    if tgt is None:
        limit = 2 * S + 2
        outs = model.translate(src, beam=1, max_len=limit)
        T = max(len(o) + (len(o) < limit) for o in outs)
        y = np.full((B, T), PAD, np.int64)  # (B, T): the decode, EOS if it ended with one
        for b, o in enumerate(outs):
            y[b, : len(o)] = o
            if len(o) < limit:
                y[b, len(o)] = EOS
    else:
        y = np.asarray(tgt)
        if y.ndim != 2 or y.shape[0] != B:
            raise ValueError(f"tgt must be ({B}, T) int ids like src's rows, got {y.shape}")
    T = y.shape[1]
    V = model.config.tgt_vocab
    saved = {k: g.copy() for k, g in model.grads.items()}
    conn = np.zeros((B, T, S))  # (B, T, S)
    rows_b, rows_t = np.nonzero(y != PAD)  # one backward row per real (example, step)
    for start in range(0, len(rows_b), max_rows):
        bs, ts = rows_b[start : start + max_rows], rows_t[start : start + max_rows]
        n = len(bs)
        model.forward(src[bs], y[bs])
        dlogits = np.zeros((n, T, V), model.dtype)  # (n, T, V): one-hot on (t, y_t) per row
        dlogits[np.arange(n), ts, y[bs, ts]] = 1.0
        model.backward(dlogits)
        conn[bs, ts] = np.linalg.norm(model.d_source.astype(np.float64), axis=-1)  # (n, S)
    for k, g in saved.items():
        model.grads[k][...] = g
    return conn
