r"""Measured gradient flow through time: dL/dh_t (and dL/dc_t) at every step, exactly.

The seeds *simulate* the vanishing gradient with constant decay factors; this module
*measures* it with the real backward pass. Write s_t for the state after step t (s_0 the
initial state): h_t for GRU and RNN, (h_t, c_t) for LSTM. The loss depends on s_t only
through the steps after t, so::

    G_t = dL/ds_t = (ds_{t+1}/ds_t)^T G_{t+1} + dL/dy_t         G_T = dL/ds_T + dL/dy_T

`state_gradients` computes G_t for t = T, T-1, ..., 0 by running the layer's own forward
and backward on one step at a time, starting each step from the recorded state s_{t-1}
and handing G_t to `backward(dy_t, dstate=G_t)`; the step's `dstate0` is G_{t-1}. That
is the chain rule the full backward pass applies internally, made visible at every step,
and it uses only the public layer interface (nothing in `gatescope.nn` changes). The
tests check it against PyTorch autograd and against a second method (`suffix_gradients`:
one full forward and backward of the suffix x_{t+1..T} per t).

Along the LSTM cell state alone, c_t = f_t * c_{t-1} + i_t * g_t gives the textbook chapter's
claim::

    dc_T/dc_k (h-path cut) = f_{k+1} * f_{k+2} * ... * f_T          (elementwise)

`forget_gate_product` computes the right side; `cell_state_jacobian` the left, from the
backward pass, with or without the path through h (cut_h=False gives the true diagonal of
dc_T/dc_k, which adds what flows through h_{k+1}, ..., h_T back into the cell).

Shapes: B batch, T time, D input, H hidden, L layers. States are (B, H) (or (L, B, H)
with several layers); per-step results are (B, T + 1, H) with index t = 0..T.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from gatescope.nn import Recurrent, build_recurrent

__all__ = [
    "GradientFlow",
    "cell_state_jacobian",
    "forget_gate_product",
    "gradient_flow",
    "state_gradients",
    "suffix_gradients",
]


# --------------------------------------------------------------------------------------------
# plumbing


def _clone(layer: Recurrent) -> Recurrent:
    """A batch-first copy of `layer` with the same weights (so its trace stays untouched)."""
    if not isinstance(layer, Recurrent):
        raise ValueError(f"layer must be a gatescope LSTM, GRU or RNN, got {type(layer).__name__}")
    if layer.config.bidirectional:  # one state per step exists only within one direction
        raise ValueError(
            "layer: step-by-step gradients need a single direction; a bidirectional layer's "
            "reverse direction runs backwards in time: measure each one on its own with "
            "layer.direction(k, reverse=...)"
        )
    config = dataclasses.replace(layer.config, batch_first=True)
    twin = build_recurrent(config, seed=0)
    for name, p in layer.params.items():
        twin.params[name][...] = p
    return twin


def _batch_first(layer: Recurrent, a: np.ndarray | None) -> np.ndarray | None:
    if a is None or layer.config.batch_first:
        return a
    return np.asarray(a).transpose(1, 0, 2)


def _parts(state: Any) -> list[np.ndarray]:
    """Public state -> list of arrays ([h] or [h, c])."""
    return list(state) if isinstance(state, tuple | list) else [state]


def _pack(layer: Recurrent, parts: list[np.ndarray]) -> Any:
    return tuple(parts) if len(layer.state_names) > 1 else parts[0]


def _states(layer: Recurrent, trace: dict[str, np.ndarray], state0: Any) -> list[np.ndarray]:
    """Every state s_0..s_T from a trace: per state name an array (B, T + 1, H) or (L, ...)."""
    out = []
    for name, s0 in zip(layer.state_names, _parts(state0), strict=True):
        seq = trace[name]  # (B, T, H) or (L, B, T, H)
        out.append(np.concatenate([s0[..., None, :], seq], axis=-2))
    return out


def _at(arrays: list[np.ndarray], t: int) -> list[np.ndarray]:
    return [a[..., t, :] for a in arrays]


def _zeros_like_state(layer: Recurrent, B: int) -> list[np.ndarray]:
    return _parts(layer.zero_state(B))


def _add_dy(layer: Recurrent, parts: list[np.ndarray], dy_t: np.ndarray | None) -> None:
    """G_t += dL/dy_t: the output y_t is the top layer's h_t."""
    if dy_t is None:
        return
    if layer.num_layers == 1:
        parts[0] += dy_t
    else:
        parts[0][-1] += dy_t


# --------------------------------------------------------------------------------------------
# per-step gradients


def state_gradients(
    layer: Recurrent,
    x: np.ndarray,
    dy: np.ndarray | None = None,
    dstate: Any = None,
    state0: Any = None,
) -> dict[str, np.ndarray]:
    """G_t = dL/ds_t for t = 0..T, where dL/dy = `dy` and dL/d(final state) = `dstate`.

    x (B, T, D) in the layer's layout; dy (B, T, H) or None; dstate like the final state or
    None. Returns {"h": (B, T + 1, H)} (GRU, RNN) or {"h": ..., "c": ...} (LSTM); with
    num_layers > 1 each is (L, B, T + 1, H). Index t is the state after step t (0: initial),
    so G[:, -1] is the gradient at the loss end and G[:, 0] equals `layer.backward`'s
    `dstate0`. The layer itself is not modified (a copy does the work).
    """
    twin = _clone(layer)
    x = np.asarray(_batch_first(layer, x))
    dy = _batch_first(layer, dy)
    _, _ = twin(x, state0)
    B, T = x.shape[0], x.shape[1]
    if state0 is None:
        state0 = twin.zero_state(B)
    states = _states(twin, twin.trace, state0)  # s_0..s_T, each (..., B, T + 1, H)
    if dy is not None:
        dy = np.asarray(dy, dtype=twin.dtype)
        if dy.shape != (B, T, twin.hidden_size):
            raise ValueError(f"dy must have shape {(B, T, twin.hidden_size)}, got {dy.shape}")
    G = [np.zeros_like(s) for s in states]  # G_t for every t
    g = (
        _zeros_like_state(twin, B)
        if dstate is None
        else [np.array(p, dtype=twin.dtype) for p in _parts(dstate)]
    )
    _add_dy(twin, g, None if dy is None else dy[:, T - 1])
    for a, v in zip(G, g, strict=True):
        a[..., T, :] = v
    for t in range(T, 0, -1):  # step t maps s_{t-1} -> s_t
        twin(x[:, t - 1 : t], _pack(twin, _at(states, t - 1)))
        twin.backward(None, _pack(twin, g))
        g = [np.array(p) for p in _parts(twin.dstate0)]  # G_{t-1} from the steps after t-1 ...
        _add_dy(twin, g, None if (dy is None or t == 1) else dy[:, t - 2])  # ... plus y_{t-1}
        for a, v in zip(G, g, strict=True):
            a[..., t - 1, :] = v
    return dict(zip(twin.state_names, G, strict=True))


def suffix_gradients(
    layer: Recurrent,
    x: np.ndarray,
    dy: np.ndarray | None = None,
    dstate: Any = None,
    state0: Any = None,
) -> dict[str, np.ndarray]:
    """The same G_t as `state_gradients`, by a second, slower route (for tests).

    For each t, run the whole suffix x_{t+1..T} from the recorded s_t and read G_t from the
    full backward pass's `dstate0` (plus dL/dy_t). O(T^2) steps. Arguments and result as
    `state_gradients`: x (B, T, D), dy (B, T, H); {"h": (B, T + 1, H), ...}.
    """
    twin = _clone(layer)
    x = np.asarray(_batch_first(layer, x))
    dy = _batch_first(layer, dy)
    _, _ = twin(x, state0)
    B, T = x.shape[0], x.shape[1]
    if state0 is None:
        state0 = twin.zero_state(B)
    states = _states(twin, twin.trace, state0)
    G = [np.zeros_like(s) for s in states]
    final = (
        _zeros_like_state(twin, B)
        if dstate is None
        else [np.array(p, dtype=twin.dtype) for p in _parts(dstate)]
    )
    for t in range(T + 1):
        if t < T:
            twin(x[:, t:], _pack(twin, _at(states, t)))
            twin.backward(None if dy is None else dy[:, t:], _pack(twin, final))
            g = [np.array(p) for p in _parts(twin.dstate0)]
        else:
            g = [p.copy() for p in final]
        _add_dy(twin, g, None if (dy is None or t == 0) else dy[:, t - 1])
        for a, v in zip(G, g, strict=True):
            a[..., t, :] = v
    return dict(zip(twin.state_names, G, strict=True))


# --------------------------------------------------------------------------------------------
# norms against steps back from the loss


@dataclasses.dataclass(frozen=True)
class GradientFlow:
    """Mean gradient norms against steps back from the loss (index k: state s_{T-k})."""

    arch: str  # "lstm", "gru" or "rnn"
    steps_back: np.ndarray  # (T + 1,) k = 0..T
    h: np.ndarray  # (T + 1,) mean over the batch of ||dL/dh_{T-k}||
    c: np.ndarray | None  # (T + 1,) the same for the LSTM cell state, else None
    loss: float | None = None  # the loss the gradients are of, when known

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: lists of floats."""
        d: dict[str, Any] = {
            "arch": self.arch,
            "steps_back": [int(k) for k in self.steps_back],
            "h": [float(v) for v in self.h],
        }
        if self.c is not None:
            d["c"] = [float(v) for v in self.c]
        if self.loss is not None:
            d["loss"] = float(self.loss)
        return d

    def ratio(self, k: int) -> dict[str, float]:
        """||G_{T-k}|| / ||G_T|| for h (and c: relative to h's at the loss end, which seeds it).

        k: steps back, 0..T. Returns {"h": float} (and "c" for an LSTM).
        """
        out = {"h": float(self.h[k] / self.h[0])}
        if self.c is not None:
            out["c"] = float(self.c[k] / self.h[0])
        return out


def gradient_flow(
    layer: Recurrent,
    x: np.ndarray,
    dy: np.ndarray | None = None,
    dstate: Any = None,
    state0: Any = None,
    *,
    layer_index: int = -1,
    loss: float | None = None,
) -> GradientFlow:
    """Norms of dL/dh_t (and dL/dc_t) averaged over the batch, against steps back T - t.

    x (B, T, D), dy (B, T, H), dstate, state0 as for `state_gradients`. Each sequence's
    gradient is a vector over the H units; its Euclidean norm is taken per sequence, then
    averaged over the B sequences:

        h[k] = (1 / B) sum_b ||dL/dh_{T-k}[b, :]||_2        k = 0..T steps back

    (c[k] the same for the LSTM cell state). Returns a `GradientFlow` of (T + 1,) arrays.
    With several layers, `layer_index` picks the layer (default: the top one).
    """
    G = state_gradients(layer, x, dy, dstate, state0)

    def norms(a: np.ndarray) -> np.ndarray:
        if a.ndim == 4:
            a = a[layer_index]
        n = np.linalg.norm(a, axis=-1).mean(axis=0)  # (T + 1,)
        return n[::-1].copy()  # index k = steps back

    h = norms(G["h"])
    c = norms(G["c"]) if "c" in G else None
    return GradientFlow(layer.config.arch, np.arange(len(h)), h, c, loss)


# --------------------------------------------------------------------------------------------
# the cell-state path


def forget_gate_product(f: np.ndarray) -> np.ndarray:
    """P_k = f_{k+1} * ... * f_T elementwise, for k = 0..T (P_T = 1).

    f: forget gates (..., T, H) as in `lstm.trace["f"]` (index j holds f_{j+1}).
    Returns (..., T + 1, H).
    """
    f = np.asarray(f, dtype=np.float64)
    if f.ndim < 2:
        raise ValueError(f"f must have shape (..., T, H), got {f.shape}")
    rev = np.cumprod(f[..., ::-1, :], axis=-2)[..., ::-1, :]  # rev[k] = f[k] * ... * f[T-1]
    ones = np.ones((*f.shape[:-2], 1, f.shape[-1]))
    return np.concatenate([rev, ones], axis=-2)


def cell_state_jacobian(
    lstm: Recurrent, x: np.ndarray, *, cut_h: bool = False, state0: Any = None
) -> np.ndarray:
    """Diagonal of dc_T/dc_k for k = 0..T, from the backward pass, for each sequence.

    x (B, T, D). Returns (B, T + 1, H): entry [b, k, j] = d c_T[j] / d c_k[j] for sequence b
    (h_k held fixed: the state is the pair (h_k, c_k)). With `cut_h=True` the gradient that
    steps back through h is dropped at every step, leaving the cell-state path alone; then
    the result equals `forget_gate_product(trace["f"])`. Single-layer LSTMs only.
    """
    if getattr(lstm, "config", None) is None or lstm.config.arch != "lstm":
        raise ValueError("cell_state_jacobian needs an LSTM")
    if lstm.num_layers != 1:
        raise ValueError(f"cell_state_jacobian needs num_layers=1, got {lstm.num_layers}")
    twin = _clone(lstm)
    x = np.asarray(_batch_first(lstm, x))
    B, T, D = x.shape
    H = twin.hidden_size
    xr = np.repeat(x, H, axis=0)  # (B*H, T, D): sequence b repeated once per unit j
    s0 = None if state0 is None else tuple(np.repeat(s, H, axis=0) for s in state0)
    _, _ = twin(xr, s0)
    if s0 is None:
        s0 = twin.zero_state(B * H)
    states = _states(twin, twin.trace, s0)
    seed = np.tile(np.eye(H), (B, 1))  # (B*H, H): row (b, j) seeds unit j
    dh, dc = np.zeros_like(seed), seed.copy()
    out = np.empty((B * H, T + 1))
    out[:, T] = 1.0
    for t in range(T, 0, -1):
        twin(xr[:, t - 1 : t], _pack(twin, _at(states, t - 1)))
        twin.backward(None, (dh, dc))
        dh, dc = (np.array(a) for a in twin.dstate0)
        if cut_h:
            dh = np.zeros_like(dh)
        out[:, t - 1] = (dc * seed).sum(axis=1)  # row (b, j): unit j of dc_T[j]/dc_{t-1}
    return out.reshape(B, H, T + 1).transpose(0, 2, 1).copy()


def finite_difference_cell_jacobian(
    lstm: Recurrent, x: np.ndarray, k: int, eps: float = 1e-6
) -> np.ndarray:
    """Diagonal of dc_T/dc_k by central differences (h_k fixed), for checking: (B, H).

    x (B, T, D), k in 0..T, e_j the j-th unit vector:

        out[b, j] = (c_T(c_k + eps e_j)[b, j] - c_T(c_k - eps e_j)[b, j]) / (2 eps)
    """
    twin = _clone(lstm)
    x = np.asarray(_batch_first(lstm, x))
    B, T, _ = x.shape
    H = twin.hidden_size
    _, _ = twin(x)
    states = _states(twin, twin.trace, twin.zero_state(B))
    h_k, c_k = _at(states, k)
    out = np.empty((B, H))
    run: Callable[[np.ndarray], np.ndarray]

    def run(c: np.ndarray) -> np.ndarray:
        if k == T:
            return c
        _, (_, cT) = twin(x[:, k:], (h_k, c))
        return cT

    for j in range(H):
        e = np.zeros_like(c_k)
        e[:, j] = eps
        out[:, j] = (run(c_k + e)[:, j] - run(c_k - e)[:, j]) / (2 * eps)
    return out
