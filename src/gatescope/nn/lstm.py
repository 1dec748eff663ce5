r"""Long Short-Term Memory (Hochreiter & Schmidhuber 1997, with the forget gate of Gers 2000).

For each step t, with x_t (B, D), h_{t-1} and c_{t-1} (B, H), and PyTorch's gate order::

    a_t = x_t W_ih^T + h_{t-1} W_hh^T + b          (B, 4H)  = [a_i, a_f, a_g, a_o]
    i_t = sigma(a_i)   f_t = sigma(a_f)   g_t = tanh(a_g)   o_t = sigma(a_o)
    c_t = f_t * c_{t-1} + i_t * g_t                 the additive "constant error carousel"
    h_t = o_t * tanh(c_t)

Backward, given dh = dL/dh_t (from the output and from step t+1) and dc = dL/dc_t (from t+1)::

    do   = dh * tanh(c_t)
    dc  += dh * o_t * (1 - tanh(c_t)^2)
    di   = dc * g_t     df = dc * c_{t-1}     dg = dc * i_t
    da   = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]
    dc_{t-1} = dc * f_t                          the product of forget gates, step by step
    dh_{t-1} = da W_hh     dx_t = da W_ih     dW_ih += da^T x_t   dW_hh += da^T h_{t-1}

Two implementations: `lstm_cell_forward/backward` (one step, easy to read) and
`lstm_forward/backward` (a whole sequence: one matrix product for every input projection,
one for each weight gradient). They are tested to agree. Both are the NumPy reference;
`backend.py` may hand the sequence's element-wise work to compiled kernels instead, which
are tested against it (tests/test_backends.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import lstm_variants
from .backend import kernels
from .checks import Seed, as_float_dtype, as_generator
from .edits import EditPlan
from .functional import sigmoid, tanh
from .parallel import matmul, matmul_block, run_blocks, run_rows, sum_blocks
from .recurrent import Recurrent, RecurrentConfig, chunk_steps, init_packed

# --------------------------------------------------------------------------------------------
# One step, readable


def lstm_cell_forward(x, h_prev, c_prev, w_ih, w_hh, b):
    """One step: x (B, D), h_prev, c_prev (B, H) -> h, c (B, H), cache."""
    H = h_prev.shape[1]
    a = x @ w_ih.T + h_prev @ w_hh.T  # (B, 4H)
    if b is not None:
        a = a + b
    i = sigmoid(a[:, :H])
    f = sigmoid(a[:, H : 2 * H])
    g = tanh(a[:, 2 * H : 3 * H])
    o = sigmoid(a[:, 3 * H :])
    c = f * c_prev + i * g  # (B, H)
    h = o * tanh(c)  # (B, H)
    return h, c, (x, h_prev, c_prev, i, f, g, o, c)


def lstm_cell_backward(dh, dc, cache, w_ih, w_hh):
    """One step back: dh, dc (B, H) -> dx, dh_prev, dc_prev, dW_ih, dW_hh, db."""
    x, h_prev, c_prev, i, f, g, o, c = cache
    tc = tanh(c)
    do = dh * tc
    dc = dc + dh * o * (1 - tc**2)
    da = np.concatenate(
        [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g**2), do * o * (1 - o)],
        axis=1,
    )  # (B, 4H)
    return da @ w_ih, da @ w_hh, dc * f, da.T @ x, da.T @ h_prev, da.sum(axis=0)


# --------------------------------------------------------------------------------------------
# A whole sequence, fast


@dataclass
class LSTMCache:
    """Everything backward needs; it doubles as the trace (recording gates costs nothing)."""

    x: np.ndarray  # (T, B, D) the layer's input
    gates: np.ndarray  # (T, B, 4H) activated gates [i, f, g, o]
    hs: np.ndarray  # (T + 1, B, H) hidden states, h_0 first
    cs: np.ndarray  # (T + 1, B, H) cell states, c_0 first
    tanh_c: np.ndarray  # (T, B, H) tanh(c_t), kept for backward
    edits: EditPlan | None = None  # the edits this forward applied (see nn/edits.py)


def lstm_forward(x, h0, c0, w_ih, w_hh, b, backend=None, edits=None) -> LSTMCache:
    """A sequence: x (T, B, D), h0, c0 (B, H) -> cache with every gate and state.

    The step loop allocates little: the gates are activated in place in the cache, states
    written straight into it. `backend` (see `backend.backend`) may hand the element-wise
    work of each step to a kernel instead (`_lstm_forward_kernels`). `edits` (an
    `edits.EditPlan`) changes gates and states where they are computed; with it this NumPy
    code runs, never the kernels.
    """
    T, B, D = x.shape
    H = h0.shape[1]
    nb = kernels(x.dtype, backend) if edits is None else None
    if nb is not None:
        return _lstm_forward_kernels(nb, x, h0, c0, w_ih, w_hh, b)
    gates = np.matmul(x.reshape(T * B, D), w_ih.T).reshape(T, B, 4 * H)  # all input projections
    hs = np.empty((T + 1, B, H), x.dtype)
    cs = np.empty((T + 1, B, H), x.dtype)
    tanh_c = np.empty((T, B, H), x.dtype)
    hs[0], cs[0] = h0, c0
    rec = np.empty((B, 4 * H), x.dtype)  # h_{t-1} W_hh^T
    cache = LSTMCache(x, gates, hs, cs, tanh_c, edits)
    w_hh_t = np.ascontiguousarray(w_hh.T)  # (H, 4H): a plain (not transposed) BLAS product
    if b is not None:
        gates += b
    ig = np.empty((B, H), x.dtype)  # i * g
    for t in range(T):
        a = gates[t]  # (B, 4H): a_t, then the activated gates, in place
        a += np.matmul(hs[t], w_hh_t, out=rec)
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        sigmoid(a[:, : 2 * H], out=a[:, : 2 * H])  # i, f
        tanh(g, out=g)
        sigmoid(o, out=o)
        if edits is not None:  # an intervention: change the gates before they are used
            for name, gate in zip("ifgo", (i, f, g, o)):
                edits.apply(t, name, gate)
        c = np.multiply(f, cs[t], out=cs[t + 1])
        c += np.multiply(i, g, out=ig)  # c_t = f c_{t-1} + i g
        if edits is not None:
            edits.apply(t, "c", c)
        np.multiply(o, tanh(c, out=tanh_c[t]), out=hs[t + 1])  # h_t = o tanh(c_t)
        if edits is not None:
            edits.apply(t, "h", hs[t + 1])
    return cache


def _lstm_forward_kernels(nb, x, h0, c0, w_ih, w_hh, b) -> LSTMCache:
    """`lstm_forward` by a backend's kernels: the whole sequence in one call, the recurrent
    product against W_hh^T packed once (`nb.pack`), everything after it (bias included) in
    one pass a step. While both packed weights fit in `nb.FUSE_BYTES` (the L2 cache), each
    step's input projection x_t W_ih^T is computed there too, just before it is used (the
    gate block is then written once and read from cache); above, in one product first."""
    T, B, D = x.shape
    H = h0.shape[1]
    wp_ih, wp_hh = nb.pack(w_ih.T), nb.pack(w_hh.T)
    fuse = wp_ih.nbytes + wp_hh.nbytes <= nb.FUSE_BYTES
    if fuse:
        gates = np.empty((T, B, 4 * H), x.dtype)
        x = x if x.strides[2] == x.itemsize else np.ascontiguousarray(x)  # unit-stride rows
    else:
        gates = np.empty((T, B, 4 * H), x.dtype)
        matmul(x.reshape(T * B, D), w_ih.T, gates.reshape(T * B, 4 * H))
    hs = np.empty((T + 1, B, H), x.dtype)
    cs = np.empty((T + 1, B, H), x.dtype)
    tanh_c = np.empty((T, B, H), x.dtype)
    hs[0], cs[0] = h0, c0
    bias = b if b is not None else np.zeros(4 * H, x.dtype)
    rec = np.empty((B, 4 * H), x.dtype)  # h_{t-1} W_hh^T
    work = T * B * ((D if fuse else 0) + H) * 4 * H  # multiply-adds in the call
    args = (fuse, x, wp_ih, gates, bias, hs, cs, tanh_c, wp_hh, rec)
    run_rows(nb.lstm_fwd_seq, B, work, *args)  # the batch's rows over threads
    return LSTMCache(x, gates, hs, cs, tanh_c)


def lstm_backward(cache: LSTMCache, dy, dhT, dcT, w_ih, w_hh, backend=None):
    """BPTT: dy (T, B, H) or None, dhT, dcT (B, H) -> dx, dh0, dc0, dW_ih, dW_hh, db.

    Time runs backwards in chunks of K steps (see `recurrent.chunk_steps`). For a chunk,
    every factor of da that does not depend on dh or dc is computed first, in a few passes
    over the whole chunk, into da itself::

        da = [g i(1-i), c_{t-1} f(1-f), i (1-g^2), tanh(c) o(1-o)]   p = o (1 - tanh(c)^2)

    so that each step is only: dc += dh p, da[:3H] *= dc, da[3H:] *= dh, dc *= f,
    dh = da W_hh (seven calls, no temporaries). A finished chunk goes through one product
    for dx and one for each weight gradient, so dL/da is never held for the whole sequence.
    """
    nb = kernels(cache.x.dtype, backend)
    if nb is not None:  # a backend's kernels instead of the NumPy below
        return _lstm_backward_kernels(nb, cache, dy, dhT, dcT, w_ih, w_hh)
    x, gates, hs, cs, tanh_c = cache.x, cache.gates, cache.hs, cache.cs, cache.tanh_c
    T, B, D = x.shape
    H = hs.shape[2]
    dt = x.dtype
    K = chunk_steps(T, B)
    da = np.empty((K, B, 4 * H), dt)  # dL/d(pre-activations) of one chunk
    dx = np.empty((T, B, D), dt)
    grads = (np.zeros((4 * H, D), dt), np.zeros((4 * H, H), dt), np.zeros(4 * H, dt))
    scratch = tuple(np.empty_like(g) for g in grads)  # per-chunk products
    dh = np.array(dhT, dtype=dt)  # (B, H)
    dc = np.array(dcT, dtype=dt)  # (B, H)
    p = np.empty((K, B, H), dt)  # o (1 - tanh(c)^2) of one chunk
    tmp = np.empty((B, H), dt)
    dc3 = dc[:, None, :]  # (B, 1, H), broadcast over the i, f, g blocks
    for end in range(T, 0, -K):
        start = max(0, end - K)
        n = end - start
        d = da[:n]
        a = gates[start:end]  # (n, B, 4H)
        i, f, g, o = a[..., :H], a[..., H : 2 * H], a[..., 2 * H : 3 * H], a[..., 3 * H :]
        d_i, d_f, d_g, d_o = d[..., :H], d[..., H : 2 * H], d[..., 2 * H : 3 * H], d[..., 3 * H :]
        tc, pc = tanh_c[start:end], p[:n]
        np.multiply(i, i, out=d_i)
        np.subtract(i, d_i, out=d_i)
        d_i *= g  # g i (1 - i)
        np.multiply(f, f, out=d_f)
        np.subtract(f, d_f, out=d_f)
        d_f *= cs[start:end]  # c_{t-1} f (1 - f)
        np.multiply(g, g, out=d_g)
        np.subtract(1, d_g, out=d_g)
        d_g *= i  # i (1 - g^2)
        np.multiply(o, o, out=d_o)
        np.subtract(o, d_o, out=d_o)
        d_o *= tc  # tanh(c) o (1 - o)
        np.multiply(tc, tc, out=pc)
        np.subtract(1, pc, out=pc)
        pc *= o  # o (1 - tanh(c)^2)
        for t in reversed(range(start, end)):
            k = t - start
            if dy is not None:
                dh += dy[t]
            np.multiply(dh, pc[k], out=tmp)
            dc += tmp  # dc_t = dc from t+1 + dh o (1 - tanh(c)^2)
            d3 = d[k, :, : 3 * H].reshape(B, 3, H)
            np.multiply(d3, dc3, out=d3)  # da_i, da_f, da_g
            d_o[k] *= dh  # da_o
            dc *= f[k]  # dc_{t-1}
            np.matmul(d[k], w_hh, out=dh)  # dh_{t-1}
        _lstm_chunk_products(d, x, hs, dx, start, end, w_ih, grads, scratch)
    return dx, dh, dc, *grads


def _lstm_backward_kernels(nb, cache: LSTMCache, dy, dhT, dcT, w_ih, w_hh):
    """`lstm_backward` by a backend's kernels: each chunk's steps in one call, W_hh packed
    once. The batch's rows go in blocks over threads (`parallel.run_blocks`), each block
    through every chunk on its own (its steps, then its rows of dx and its part of the
    weight gradients), so that the threads meet only at the end, where the blocks' parts of
    the gradients are summed in block order."""
    x, gates, hs, cs, tanh_c = cache.x, cache.gates, cache.hs, cache.cs, cache.tanh_c
    T, B, D = x.shape
    H = hs.shape[2]
    dt = x.dtype
    K = chunk_steps(T, B)
    dx = np.empty((T, B, D), dt)
    dh = np.array(dhT, dtype=dt)  # (B, H), each block its rows
    dc = np.array(dcT, dtype=dt)  # (B, H)
    dys = dy if dy is not None else dh[None]  # (T, B, H), or a stand-in, never read
    wp_hh = nb.pack(w_hh)  # W_hh packed once for every step

    def rows(b0, b1):
        da = np.empty((K, b1 - b0, 4 * H), dt)  # the block's dL/da of one chunk
        grads = (np.zeros((4 * H, D), dt), np.zeros((4 * H, H), dt), np.zeros(4 * H, dt))
        scratch = tuple(np.empty_like(g) for g in grads)
        for end in range(T, 0, -K):
            start = max(0, end - K)
            d = da[: end - start]
            args = (start, end, dh, dys, dy is not None, gates, tanh_c, cs, dc, d, wp_hh)
            nb.lstm_bwd_seq(*args, b0, b1)
            parts = (x[:, b0:b1], hs[:, b0:b1], dx[:, b0:b1])
            _lstm_chunk_products(d, *parts, start, end, w_ih, grads, scratch)
        return grads

    grads = sum_blocks(run_blocks(rows, B, T * B * 4 * H * H))
    return dx, dh, dc, *grads


def _lstm_chunk_products(d, x, hs, dx, start, end, w_ih, grads, scratch):
    """One chunk's dx = da W_ih, and dW_ih += da^T x, dW_hh += da^T h_{t-1}, db += sum da;
    x, hs, dx may be a block of the batch's rows (then inputs are copied, dx written back)."""
    n, B, G = d.shape
    d2 = d.reshape(n * B, G)
    matmul_block(d2, w_ih, dx[start:end])
    for g, k, inp in zip(grads, scratch, (x, hs, None)):
        if inp is None:
            g += np.sum(d2, axis=0, out=k)
        else:
            g += np.matmul(d2.T, inp[start:end].reshape(n * B, -1), out=k)


# --------------------------------------------------------------------------------------------
# The public classes


class LSTMCell:
    """One LSTM step with its own parameters, as in the seeds: `h, c, cache = cell.forward(x, h, c)`.

    `backward(dh, dc, cache)` returns (dx, dh_prev, dc_prev) and *accumulates* parameter
    gradients into `grads` over the steps of a sequence; call `zero_grad()` before a new one.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        bias: bool = True,
        forget_bias: float = 1.0,
        seed: Seed = 0,
        dtype: object = np.float64,
    ) -> None:
        layer = LSTM(
            input_size, hidden_size, bias=bias, forget_bias=forget_bias, seed=seed, dtype=dtype
        )
        self.params = layer.layer_params(0)
        self.grads = {n: np.zeros_like(p) for n, p in self.params.items()}

    def forward(self, x: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray):
        p = self.params
        return lstm_cell_forward(x, h_prev, c_prev, p["weight_ih"], p["weight_hh"], p.get("bias"))

    def backward(self, dh: np.ndarray, dc: np.ndarray, cache):
        p = self.params
        dx, dh_prev, dc_prev, dw_ih, dw_hh, db = lstm_cell_backward(
            dh, dc, cache, p["weight_ih"], p["weight_hh"]
        )
        self.grads["weight_ih"] += dw_ih
        self.grads["weight_hh"] += dw_hh
        if "bias" in self.grads:
            self.grads["bias"] += db
        return dx, dh_prev, dc_prev

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0


class LSTM(Recurrent):
    """A stack of LSTM layers. `y, (h, c) = lstm(x, (h0, c0))`; trace keys i f g o c h.

    Parameters per layer k: weight_ih_lk (4H, D), weight_hh_lk (4H, H), bias_lk (4H,),
    gates in PyTorch's order i, f, g, o. The bias is initialised to 0 except the forget
    gate's, `forget_bias` (default 1: remember by default at the start of training).

    `variant` (default "vanilla", PyTorch's LSTM on the fast path) selects one of Greff et
    al.'s variants or layer norm: peephole, cifg, nfg, nig, nog, noaf, layernorm; see
    `gatescope.nn.lstm_variants` for their equations, parameters and trace constants.
    """

    arch = "lstm"
    gates = 4
    state_names = ("h", "c")
    trace_names = ("i", "f", "g", "o", "c", "h")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = True,
        forget_bias: float = 1.0,
        variant: str = "vanilla",
        bidirectional: bool = False,
        seed: Seed = 0,
        dtype: object = np.float64,
    ) -> None:
        config = RecurrentConfig(
            "lstm",
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dtype=as_float_dtype(dtype).name,
            forget_bias=float(forget_bias),
            variant=variant,
            bidirectional=bool(bidirectional),
        )
        super().__init__(config, as_generator(seed))

    def _init_layer(self, d_in, rng):
        H = self.hidden_size
        if self.config.variant != "vanilla":
            c = self.config
            return lstm_variants.init_layer(
                c.variant, d_in, H, rng, bias=c.bias, forget_bias=c.forget_bias
            )
        w_ih, w_hh = init_packed(rng, 4, d_in, H)
        p = {"weight_ih": w_ih, "weight_hh": w_hh}
        if self.config.bias:
            p["bias"] = np.zeros(4 * H)
            p["bias"][H : 2 * H] = self.config.forget_bias
        return p

    def _layer_forward(self, p, x, state0, edits=None):
        h0, c0 = state0
        if self.config.variant != "vanilla":
            cache = lstm_variants.variant_forward(self.config.variant, x, h0, c0, p, edits)
            return (cache.hs[-1].copy(), cache.cs[-1].copy()), cache
        cache = lstm_forward(x, h0, c0, p["weight_ih"], p["weight_hh"], p.get("bias"), edits=edits)
        return (cache.hs[-1].copy(), cache.cs[-1].copy()), cache

    def _layer_backward(self, p, cache, dy, dstate):
        dhT, dcT = dstate
        if self.config.variant != "vanilla" or cache.edits is not None:
            if self.config.variant == "vanilla":  # edited: the variants' readable step loop
                cache = lstm_variants.VariantCache(
                    "vanilla", cache.x, cache.gates, cache.hs, cache.cs, cache.tanh_c,
                    edits=cache.edits,
                )  # fmt: skip
            dx, dh0, dc0, grads = lstm_variants.variant_backward(cache, p, dy, dhT, dcT)
            return dx, (dh0, dc0), grads
        dx, dh0, dc0, dw_ih, dw_hh, db = lstm_backward(
            cache, dy, dhT, dcT, p["weight_ih"], p["weight_hh"]
        )
        grads = {"weight_ih": dw_ih, "weight_hh": dw_hh}
        if "bias" in p:
            grads["bias"] = db
        return dx, (dh0, dc0), grads

    def _layer_trace(self, cache):
        # variants lay out their cache alike, missing gates filled with the constant they act as
        H = self.hidden_size
        g = cache.gates
        return {
            "i": g[:, :, :H],
            "f": g[:, :, H : 2 * H],
            "g": g[:, :, 2 * H : 3 * H],
            "o": g[:, :, 3 * H :],
            "c": cache.cs[1:],
            "h": cache.hs[1:],
        }
