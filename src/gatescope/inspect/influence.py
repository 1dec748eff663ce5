r"""Input influence: how strongly each earlier input moves a chosen output, measured exactly.

After Madsen 2019, "Visualizing memorization in RNNs". For a position p = (b, t) and a
scalar s_p read from the network there, the influence of an earlier step t' of the same
sequence is

    influence(p, t') = || d s_p / d x_{t'} ||_2        (the norm over the D input features)

computed by the layer's own backward pass (no finite differences, no simulation):

- with a head (a `Linear` on the top layer's h): s_p = z_p[k], the logit of class k, by
  default the class the model predicts at p (k = argmax z_p, z_p = W h_p + b); for a
  single-output (regression) head, the prediction itself;
- without a head: the Frobenius norm of the Jacobian d h_p / d x_{t'} of the top layer's
  hidden state, sqrt(sum_j ||d h_p[j] / d x_{t'}||^2), from H backward passes (one per unit).

Only the last W = ``window`` steps are measured. The forward pass is re-run from the
recorded state after step t - W, which is exact for t' > t - W: that state does not depend
on those inputs. For one-hot inputs the norm is over the full gradient vector, not just the
active entry.

    trace, states = gi.trace_with_states(layer, x)              # float32 trace, exact states
    values = gi.input_influence(layer, x, [(0, 99), (1, 40)], window=50, head=head)
    probs = gi.head_probabilities(states["h"][-1][0], head)      # (T, C) softmax of the head

Shapes: B sequences, T steps each, D input, H hidden, L layers, C classes, P positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gatescope.nn import Linear, Recurrent
from gatescope.nn.functional import softmax

from .gradflow import _clone

__all__ = [
    "MAX_BATCH_ROWS",
    "document_influence",
    "head_probabilities",
    "influence_positions",
    "input_influence",
    "predicted_classes",
    "top_classes",
    "trace_with_states",
]

MAX_BATCH_ROWS = 512  # sequences per backward pass in the influence computation


def trace_with_states(
    layer: Recurrent, x: np.ndarray, chunk: int = 2048
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Forward a copy of ``layer`` over x (B, T, D) in time chunks (state carried).

    Returns (trace, states): trace name -> float32 (L, B, T, H), every quantity the layer
    records; states name -> (L, B, T, H) in the layer's dtype for the state names (h; h and
    c), exact, enough to restart the forward after any step. ``chunk``: steps per forward
    call (bounds the memory of one call's trace). ``layer``'s own trace is left as it was.
    """
    twin = _clone(layer)
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != twin.input_size:
        raise ValueError(f"x must have shape (B, T, D={twin.input_size}), got {x.shape}")
    x = x.astype(twin.dtype, copy=False)
    B, T, _ = x.shape
    L, H = twin.num_layers, twin.hidden_size
    trace = {n: np.empty((L, B, T, H), np.float32) for n in twin.trace_names}
    states = {n: np.empty((L, B, T, H), twin.dtype) for n in twin.state_names}
    state = None
    for t0 in range(0, T, chunk):
        _, state = twin(x[:, t0 : t0 + chunk], state)
        for name, a in twin.trace.items():  # (B, t, H) or (L, B, t, H)
            a = a.reshape(L, B, -1, H)
            trace[name][:, :, t0 : t0 + chunk] = a
            if name in states:
                states[name][:, :, t0 : t0 + chunk] = a
    return trace, states


def _state_at(layer: Recurrent, states: Mapping, rows: np.ndarray, cols: np.ndarray) -> Any:
    """The public state after step cols[i] of sequence rows[i] (zeros where cols[i] < 0)."""
    parts = []
    for name in layer.state_names:
        a = states[name][:, rows, np.maximum(cols, 0)]  # (L, n, H)
        a = np.where((cols >= 0)[None, :, None], a, 0).astype(layer.dtype)
        parts.append(a[0] if layer.num_layers == 1 else a)
    return tuple(parts) if len(parts) > 1 else parts[0]


def _repeat_state(state: Any, k: int, L: int) -> Any:
    axis = 0 if L == 1 else 1
    if isinstance(state, tuple):
        return tuple(np.repeat(s, k, axis=axis) for s in state)
    return np.repeat(state, k, axis=axis)


def _head_weight(head: Linear, dtype: Any) -> np.ndarray:
    return head.params["weight"].astype(dtype)  # (C, H)


def _head_bias(head: Linear, dtype: Any) -> Any:
    return head.params["bias"].astype(dtype) if "bias" in head.params else 0.0


def predicted_classes(h: np.ndarray, head: Linear) -> np.ndarray:
    """argmax_k z[k] of the head's output z = W h + b for h (..., H); zeros for one output.

    W (C, H) and b (C,) are the head's; returns (...,) int64 class indices.
    """
    h = np.asarray(h)
    W = _head_weight(head, h.dtype)  # (C, H)
    if W.shape[0] == 1:
        return np.zeros(h.shape[:-1], np.int64)
    z = h @ W.T + _head_bias(head, h.dtype)  # (..., C)
    return np.argmax(z, axis=-1)


def head_probabilities(h: np.ndarray, head: Linear) -> np.ndarray:
    """softmax(W h + b) in float64 for h (..., H): the head's distribution, (..., C).

    With W (C, H) and b (C,) the head's: z = W h + b, p[k] = exp(z[k]) / sum_j exp(z[j]).
    """
    h = np.asarray(h)
    z = h @ _head_weight(head, h.dtype).T + _head_bias(head, h.dtype)  # (..., C)
    return softmax(z.astype(np.float64))


def top_classes(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes of each row of probs (n, C), most probable first (ties:
    the lower class first), and their probabilities: (idx (n, k) int64, p (n, k))."""
    k = int(min(k, probs.shape[1]))
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (n, k)
    return idx, np.take_along_axis(probs, idx, axis=1)


def input_influence(
    layer: Recurrent,
    x: np.ndarray,
    positions: Sequence[tuple[int, int]],
    *,
    window: int = 100,
    head: Linear | None = None,
    classes: Sequence[int] | None = None,
    states: Mapping[str, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Measured influence ||d s_p / d x_t||_2 of earlier inputs on positions ``(b, t)``.

    x (B, T, D): the sequences (each read from the zero state); ``positions``: P pairs
    (b, t). Returns a list of P float64 arrays; entry i, for (b, t), has n = min(t + 1,
    window) values over the steps t' = t - n + 1 .. t (oldest first):

        out[i][j] = || d s_p / d x_{t - n + 1 + j}[b, :] ||_2      (norm over the D inputs)

    s_p is ``z[classes[i]]``, z = W h_t + b the head's output at (b, t), when ``head`` is
    given (``classes`` (P,) defaults to each position's predicted class,
    `predicted_classes`; a single-output head uses its output); without a head the value is
    the Frobenius norm sqrt(sum_j ||d h_t[j] / d x_t'||_2^2) of the top layer's Jacobian
    (see the module docstring). ``states``: the (L, B, T, H) states of `trace_with_states`
    (recomputed if None).
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, T, D), got {x.shape}")
    B, T, D = x.shape
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    pos = np.asarray(positions, np.int64).reshape(-1, 2)
    if pos.size and (
        pos[:, 0].min() < 0 or pos[:, 0].max() >= B or pos[:, 1].min() < 0 or pos[:, 1].max() >= T
    ):
        raise ValueError(f"positions must be (b, t) with 0 <= b < {B} and 0 <= t < {T}")
    twin = _clone(layer)
    x = x.astype(twin.dtype, copy=False)
    if states is None:
        _, states = trace_with_states(twin, x)
    H = twin.hidden_size
    if head is not None:
        W = _head_weight(head, twin.dtype)  # (C, H)
        if classes is None:
            top = np.asarray(states["h"][-1][pos[:, 0], pos[:, 1]], twin.dtype)  # (P, H)
            classes = predicted_classes(top, head)
        classes = np.asarray(classes, np.int64).reshape(-1)
        if classes.shape != (len(pos),):
            raise ValueError(
                f"classes must give one class per position ({len(pos)}), got {classes.shape}"
            )
    out: list[np.ndarray] = [np.empty(0)] * len(pos)
    lengths = np.minimum(pos[:, 1] + 1, window)
    per_pos = 1 if head is not None else H  # backward rows per position
    chunk = max(1, MAX_BATCH_ROWS // per_pos)
    for n in np.unique(lengths):
        idx = np.flatnonzero(lengths == n)
        for c0 in range(0, len(idx), chunk):
            sel = idx[c0 : c0 + chunk]
            b, t = pos[sel, 0], pos[sel, 1]
            steps = t[:, None] - n + 1 + np.arange(n)[None, :]  # (P', n)
            xw = x[b[:, None], steps]  # (P', n, D)
            state0 = _state_at(twin, states, b, t - n)
            if head is None:  # one row per (position, unit): dy = e_j at the last step
                xw = np.repeat(xw, H, axis=0)
                state0 = _repeat_state(state0, H, twin.num_layers)
            twin(xw, state0)
            dy = np.zeros((len(xw), n, H), twin.dtype)  # (rows, n, H)
            if head is None:
                dy[np.arange(len(xw)), -1, np.tile(np.arange(H), len(sel))] = 1.0
            else:
                dy[:, -1, :] = W[classes[sel]]  # d z[k] / d h = W[k]: the bias drops out
            dx = twin.backward(dy)  # (rows, n, D)
            norms = np.sum(dx.astype(np.float64) ** 2, axis=-1)  # (rows, n)
            if head is None:
                norms = norms.reshape(len(sel), H, n).sum(axis=1)  # (P', n)
            norms = np.sqrt(norms)
            for i, k in enumerate(sel):
                out[k] = norms[i]
    return out


def influence_positions(n_total: int, positions: int | Sequence[int]) -> np.ndarray:
    """Flat positions (sorted, unique) in a document of ``n_total`` steps: ``positions``
    of them spread evenly from the first step to the last when an int, else those given.

    Returns (P,) int64 in [0, n_total): round(linspace(0, n_total - 1, count)) for an int
    (empty for count <= 0), or the given positions sorted and deduplicated.
    """
    if isinstance(positions, int | np.integer):
        count = int(positions)
        if count <= 0:
            return np.zeros(0, np.int64)
        spread = np.linspace(0, n_total - 1, min(count, n_total))  # (P,)
        return np.unique(np.round(spread).astype(np.int64))
    flat = np.unique(np.asarray(positions, np.int64).reshape(-1))
    if flat.size and (flat.min() < 0 or flat.max() >= n_total):
        raise ValueError(f"grad_positions must lie in [0, {n_total})")
    return flat


def document_influence(
    layer: Recurrent,
    x: np.ndarray,
    flat: np.ndarray,
    *,
    window: int,
    head: Linear | None = None,
    states: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """`input_influence` at flat positions of the document x (B, T, D), read as its B * T
    steps one sequence after another: returns (classes, values), classes (P,) the predicted
    class differentiated at each position (None without a head), values as `input_influence`.

    flat (P,): positions in [0, B * T); position f is step t = f mod T of sequence
    b = f div T, and is measured over at most ``window`` steps of that sequence.
    """
    x = np.asarray(x)
    B, T, _ = x.shape
    flat = np.asarray(flat, np.int64).reshape(-1)
    if states is None:
        _, states = trace_with_states(layer, x)
    b, t = np.divmod(flat, T)  # (P,) each
    classes = None
    if head is not None:
        top = np.asarray(states["h"][-1][b, t])  # (P, H) the top layer's h at each position
        classes = predicted_classes(top, head)
    values = input_influence(
        layer,
        x,
        np.stack([b, t], axis=1),
        window=int(window),
        head=head,
        classes=classes,
        states=states,
    )
    return classes, values
