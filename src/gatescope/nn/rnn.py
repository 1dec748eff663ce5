r"""The vanilla (Elman) recurrent network: the baseline whose gradients vanish.

For each step t::

    h_t = phi(x_t W_ih^T + h_{t-1} W_hh^T + b)        phi = tanh or relu

Backward, with dh = dL/dh_t::

    da = dh * phi'(a_t)   (1 - h_t^2 for tanh, [h_t > 0] for relu)
    dh_{t-1} = da W_hh    dx_t = da W_ih    dW_ih += da^T x_t    dW_hh += da^T h_{t-1}

so dL/dh_k is a product of T - k Jacobians diag(phi') W_hh: it shrinks or explodes
geometrically, which is the problem the gated networks exist to solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import kernels
from .checks import Seed, as_float_dtype, as_generator
from .edits import EditPlan
from .functional import tanh
from .parallel import matmul, matmul_block, run_blocks, run_rows, sum_blocks
from .recurrent import Recurrent, RecurrentConfig, chunk_steps, init_packed


def _activate(a: np.ndarray, nonlinearity: str, out=None) -> np.ndarray:
    """phi(a): tanh or max(a, 0)."""
    if nonlinearity == "tanh":
        return tanh(a, out=out)
    return np.maximum(a, 0, out=out)


def _activation_grad(h: np.ndarray, nonlinearity: str) -> np.ndarray:
    """phi'(a) written in terms of the output h = phi(a)."""
    return 1 - h * h if nonlinearity == "tanh" else (h > 0).astype(h.dtype)


def rnn_cell_forward(x, h_prev, w_ih, w_hh, b, nonlinearity):
    """One step: x (B, D), h_prev (B, H) -> h (B, H), cache."""
    a = x @ w_ih.T + h_prev @ w_hh.T  # (B, H)
    if b is not None:
        a = a + b
    h = _activate(a, nonlinearity)
    return h, (x, h_prev, h)


def rnn_cell_backward(dh, cache, w_ih, w_hh, nonlinearity):
    """One step back: dh (B, H) -> dx, dh_prev, dW_ih, dW_hh, db."""
    x, h_prev, h = cache
    da = dh * _activation_grad(h, nonlinearity)  # (B, H)
    return da @ w_ih, da @ w_hh, da.T @ x, da.T @ h_prev, da.sum(axis=0)


@dataclass
class RNNCache:
    """Everything backward needs; it doubles as the trace."""

    x: np.ndarray  # (T, B, D) the layer's input
    hs: np.ndarray  # (T + 1, B, H) hidden states, h_0 first
    edits: EditPlan | None = None  # the edits this forward applied (see nn/edits.py)


def rnn_forward(x, h0, w_ih, w_hh, b, nonlinearity, backend=None, edits=None) -> RNNCache:
    """A sequence: x (T, B, D), h0 (B, H) -> cache with every hidden state.

    The input projections go straight into hs[1:], which each step then overwrites with
    its state, so nothing but the cache is allocated. `edits` (an `edits.EditPlan`)
    changes h_t where it is computed; with it this NumPy code runs, never the kernel.
    """
    T, B, D = x.shape
    H = h0.shape[1]
    hs = np.empty((T + 1, B, H), x.dtype)
    hs[0] = h0
    matmul(x.reshape(T * B, D), w_ih.T, hs[1:].reshape(T * B, H))  # input projections
    if b is not None:
        hs[1:] += b
    nb = kernels(x.dtype, backend) if edits is None else None
    if nb is not None:  # a backend's kernels: the whole sequence in one call
        args = (hs, nb.pack(w_hh.T), nonlinearity == "relu")
        run_rows(nb.rnn_fwd_seq, B, T * B * H * H, *args)  # the batch's rows over threads
        return RNNCache(x, hs, edits)
    rec = np.empty((B, H), x.dtype)
    w_hh_t = w_hh.T
    for t in range(T):
        np.matmul(hs[t], w_hh_t, out=rec)
        hs[t + 1] += rec
        _activate(hs[t + 1], nonlinearity, out=hs[t + 1])
        if edits is not None:  # an intervention: change h_t before step t + 1 reads it
            edits.apply(t, "h", hs[t + 1])
    return RNNCache(x, hs, edits)


def rnn_backward(cache: RNNCache, dy, dhT, w_ih, w_hh, nonlinearity, backend=None):
    """BPTT: dy (T, B, H) or None, dhT (B, H) -> dx, dh0, dW_ih, dW_hh, db.

    dL/da is kept for a chunk of steps only; each finished chunk goes through one product
    for dx and one for each weight gradient.
    """
    x, hs, ed = cache.x, cache.hs, cache.edits
    relu = nonlinearity == "relu"
    nb = kernels(x.dtype, backend) if ed is None else None  # edited: the NumPy steps below
    if nb is not None:  # a backend's kernels instead
        return _rnn_backward_kernels(nb, cache, dy, dhT, w_ih, w_hh, relu)
    T, B, D = x.shape
    H = hs.shape[2]
    dt = x.dtype
    K = chunk_steps(T, B)
    da = np.empty((K, B, H), dt)
    dx = np.empty((T, B, D), dt)
    grads = np.zeros((H, D), dt), np.zeros((H, H), dt), np.zeros(H, dt)
    scratch = tuple(np.empty_like(g) for g in grads)
    dh = np.array(dhT, dtype=dt)
    tmp = np.empty((B, H), dt)
    for end in range(T, 0, -K):
        start = max(0, end - K)
        for t in reversed(range(start, end)):
            d = da[t - start]
            if ed is not None:
                if dy is not None:
                    dh += dy[t]
                h = ed.original(t, "h", hs[t + 1])  # phi' at the value computed
                np.multiply(ed.grad(t, "h", dh), _activation_grad(h, nonlinearity), out=d)
            else:
                if dy is not None:
                    dh += dy[t]
                h = hs[t + 1]
                if relu:
                    np.greater(h, 0, out=tmp)  # phi'(a) = [h > 0]
                else:
                    np.multiply(h, h, out=tmp)
                    np.subtract(1, tmp, out=tmp)  # phi'(a) = 1 - h^2
                np.multiply(dh, tmp, out=d)
            np.matmul(d, w_hh, out=dh)
        _rnn_chunk_products(da, x, hs, dx, start, end, w_ih, grads, scratch)
    return dx, dh, *grads


def _rnn_chunk_products(da, x, hs, dx, start, end, w_ih, grads, scratch):
    """One chunk's dx = da W_ih, dW_ih += da^T x, dW_hh += da^T h_{t-1}, db += sum da; x, hs,
    dx may be a block of the batch's rows (then the inputs are copied, dx written back)."""
    B, D = x.shape[1], x.shape[2]
    H = hs.shape[2]
    n = (end - start) * B
    d2 = da[: end - start].reshape(n, H)
    matmul_block(d2, w_ih, dx[start:end])
    (dw_ih, dw_hh, db), (k_ih, k_hh, k_b) = grads, scratch
    dw_ih += np.matmul(d2.T, x[start:end].reshape(n, D), out=k_ih)
    dw_hh += np.matmul(d2.T, hs[start:end].reshape(n, H), out=k_hh)
    db += np.sum(d2, axis=0, out=k_b)


def _rnn_backward_kernels(nb, cache: RNNCache, dy, dhT, w_ih, w_hh, relu):
    """`rnn_backward` by a backend's kernels: each chunk's steps in one call, W_hh packed
    once, the batch's rows in blocks over threads, each block through every chunk on its
    own (as `lstm._lstm_backward_kernels`)."""
    x, hs = cache.x, cache.hs
    T, B, D = x.shape
    H = hs.shape[2]
    dt = x.dtype
    K = chunk_steps(T, B)
    dx = np.empty((T, B, D), dt)
    dh = np.array(dhT, dtype=dt)  # (B, H), each block its rows
    dys = dy if dy is not None else dh[None]  # (T, B, H), or a stand-in, never read
    wp_hh = nb.pack(w_hh)  # W_hh packed once for every step

    def rows(b0, b1):
        da = np.empty((K, b1 - b0, H), dt)  # the block's dL/da of one chunk
        grads = np.zeros((H, D), dt), np.zeros((H, H), dt), np.zeros(H, dt)
        scratch = tuple(np.empty_like(g) for g in grads)
        for end in range(T, 0, -K):
            start = max(0, end - K)
            nb.rnn_bwd_seq(start, end, dh, dys, dy is not None, hs, relu, da, wp_hh, b0, b1)
            parts = (x[:, b0:b1], hs[:, b0:b1], dx[:, b0:b1])
            _rnn_chunk_products(da, *parts, start, end, w_ih, grads, scratch)
        return grads

    grads = sum_blocks(run_blocks(rows, B, T * B * H * H))
    return dx, dh, *grads


class RNNCell:
    """One vanilla RNN step with its own parameters: `h, cache = cell.forward(x, h_prev)`.

    `backward(dh, cache)` returns (dx, dh_prev) and *accumulates* parameter gradients.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        bias: bool = True,
        nonlinearity: str = "tanh",
        seed: Seed = 0,
        dtype: object = np.float64,
    ) -> None:
        layer = RNN(
            input_size, hidden_size, bias=bias, nonlinearity=nonlinearity, seed=seed, dtype=dtype
        )
        self.nonlinearity = nonlinearity
        self.params = layer.layer_params(0)
        self.grads = {n: np.zeros_like(p) for n, p in self.params.items()}

    def forward(self, x: np.ndarray, h_prev: np.ndarray):
        p = self.params
        return rnn_cell_forward(
            x, h_prev, p["weight_ih"], p["weight_hh"], p.get("bias"), self.nonlinearity
        )

    def backward(self, dh: np.ndarray, cache):
        p = self.params
        dx, dh_prev, dw_ih, dw_hh, db = rnn_cell_backward(
            dh, cache, p["weight_ih"], p["weight_hh"], self.nonlinearity
        )
        self.grads["weight_ih"] += dw_ih
        self.grads["weight_hh"] += dw_hh
        if "bias" in self.grads:
            self.grads["bias"] += db
        return dx, dh_prev

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0


class RNN(Recurrent):
    """A stack of vanilla RNN layers. `y, h = rnn(x, h0)`; trace key h.

    Parameters per layer k: weight_ih_lk (H, D), weight_hh_lk (H, H), bias_lk (H,).
    """

    arch = "rnn"
    gates = 1
    state_names = ("h",)
    trace_names = ("h",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = True,
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        seed: Seed = 0,
        dtype: object = np.float64,
    ) -> None:
        config = RecurrentConfig(
            "rnn",
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dtype=as_float_dtype(dtype).name,
            nonlinearity=nonlinearity,
            bidirectional=bool(bidirectional),
        )
        super().__init__(config, as_generator(seed))

    def _init_layer(self, d_in, rng):
        w_ih, w_hh = init_packed(rng, 1, d_in, self.hidden_size)
        p = {"weight_ih": w_ih, "weight_hh": w_hh}
        if self.config.bias:
            p["bias"] = np.zeros(self.hidden_size)
        return p

    def _layer_forward(self, p, x, state0, edits=None):
        (h0,) = state0
        cache = rnn_forward(
            x,
            h0,
            p["weight_ih"],
            p["weight_hh"],
            p.get("bias"),
            self.config.nonlinearity,
            edits=edits,
        )
        return (cache.hs[-1].copy(),), cache

    def _layer_backward(self, p, cache, dy, dstate):
        (dhT,) = dstate
        dx, dh0, dw_ih, dw_hh, db = rnn_backward(
            cache, dy, dhT, p["weight_ih"], p["weight_hh"], self.config.nonlinearity
        )
        grads = {"weight_ih": dw_ih, "weight_hh": dw_hh}
        if "bias" in p:
            grads["bias"] = db
        return dx, (dh0,), grads

    def _layer_trace(self, cache):
        return {"h": cache.hs[1:]}
