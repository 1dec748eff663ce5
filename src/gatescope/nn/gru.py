r"""Gated Recurrent Unit (Cho et al. 2014), in both of its published forms.

Gate order r, z, n as in PyTorch; W_ih (3H, D) = [W_ir; W_iz; W_in], W_hh likewise::

    r_t = sigma(x_t W_ir^T + h_{t-1} W_hr^T + b_r)                       reset gate
    z_t = sigma(x_t W_iz^T + h_{t-1} W_hz^T + b_z)                       update gate
    reset_after=False (the textbook chapter's form, Cho et al.):
        n_t = tanh(x_t W_in^T + b_n + (r_t * h_{t-1}) W_hn^T)
    reset_after=True (PyTorch and cuDNN; Keras' reset_after):
        n_t = tanh(x_t W_in^T + b_n + r_t * (h_{t-1} W_hn^T + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

The update-gate convention is PyTorch's: z_t near 1 *keeps* the old state. The textbook chapter
writes h = (1 - z) h_prev + z h_cand, so its z is our 1 - z; nothing else differs.
`reset_after=True` needs the extra bias b_hn (H,) inside the reset product, so a GRU
imported from PyTorch has 3H + H bias entries per layer; the default form has 3H.

Backward, with dh = dL/dh_t::

    dn = dh * (1 - z)    dz = dh * (h_{t-1} - n)    da_n = dn * (1 - n^2)   da_z = dz z(1-z)
    reset_after=False:  drh = da_n W_hn;   dr = drh * h_{t-1};   dW_hn += da_n^T (r * h_{t-1})
    reset_after=True:   dr = da_n * (h_{t-1} W_hn^T + b_hn);    dW_hn += (r da_n)^T h_{t-1}
    da_r = dr r(1-r);   dh_{t-1} = dh * z + [da_r, da_z] W_h{r,z} + (drh * r  |  (r da_n) W_hn)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import kernels
from .checks import Seed, as_float_dtype, as_generator
from .edits import EditPlan
from .functional import sigmoid, tanh
from .parallel import matmul, matmul_block, run_blocks, run_rows, sum_blocks
from .recurrent import Recurrent, RecurrentConfig, chunk_steps, init_packed

# --------------------------------------------------------------------------------------------
# One step, readable


def gru_cell_forward(x, h_prev, w_ih, w_hh, b, b_hn, reset_after):
    """One step: x (B, D), h_prev (B, H) -> h (B, H), cache."""
    H = h_prev.shape[1]
    ax = x @ w_ih.T  # (B, 3H)
    if b is not None:
        ax = ax + b
    ah = h_prev @ w_hh[: 2 * H].T  # (B, 2H) recurrent part of r and z
    r = sigmoid(ax[:, :H] + ah[:, :H])
    z = sigmoid(ax[:, H : 2 * H] + ah[:, H:])
    if reset_after:
        hn = h_prev @ w_hh[2 * H :].T  # (B, H)
        if b_hn is not None:
            hn = hn + b_hn
        n = tanh(ax[:, 2 * H :] + r * hn)
    else:
        hn = r * h_prev  # (B, H) the reset state, what W_hn sees
        n = tanh(ax[:, 2 * H :] + hn @ w_hh[2 * H :].T)
    h = (1 - z) * n + z * h_prev
    return h, (x, h_prev, r, z, n, hn)


def gru_cell_backward(dh, cache, w_ih, w_hh, reset_after):
    """One step back: dh (B, H) -> dx, dh_prev, dW_ih, dW_hh, db, db_hn."""
    x, h_prev, r, z, n, hn = cache
    H = h_prev.shape[1]
    da_n = dh * (1 - z) * (1 - n**2)
    da_z = dh * (h_prev - n) * z * (1 - z)
    w_hn = w_hh[2 * H :]
    if reset_after:
        da_r = da_n * hn * r * (1 - r)
        dhn = da_n * r  # dL/d(h_prev W_hn^T + b_hn)
        dh_prev = dh * z + dhn @ w_hn
        dw_hn = dhn.T @ h_prev
    else:
        drh = da_n @ w_hn
        da_r = drh * h_prev * r * (1 - r)
        dh_prev = dh * z + drh * r
        dw_hn = da_n.T @ hn
        dhn = np.zeros_like(da_n)
    da_rz = np.concatenate([da_r, da_z], axis=1)  # (B, 2H)
    dh_prev = dh_prev + da_rz @ w_hh[: 2 * H]
    dax = np.concatenate([da_rz, da_n], axis=1)  # (B, 3H)
    dw_hh = np.concatenate([da_rz.T @ h_prev, dw_hn], axis=0)
    return dax @ w_ih, dh_prev, dax.T @ x, dw_hh, dax.sum(axis=0), dhn.sum(axis=0)


# --------------------------------------------------------------------------------------------
# A whole sequence, fast


@dataclass
class GRUCache:
    """Everything backward needs; it doubles as the trace."""

    x: np.ndarray  # (T, B, D) the layer's input
    gates: np.ndarray  # (T, B, 3H) activated gates [r, z, n]
    hs: np.ndarray  # (T + 1, B, H) hidden states, h_0 first
    hn: np.ndarray  # (T, B, H) h W_hn^T + b_hn (reset_after) or r * h_{t-1} (not)
    edits: EditPlan | None = None  # the edits this forward applied (see nn/edits.py)


def gru_forward(x, h0, w_ih, w_hh, b, b_hn, reset_after, backend=None, edits=None) -> GRUCache:
    """A sequence: x (T, B, D), h0 (B, H) -> cache with every gate and state.

    The step loop allocates little. reset_after=True needs one recurrent product per step,
    h_{t-1} W_hh^T (B, 3H); the textbook chapter's form two, as r must come before W_hn. `backend`
    may hand the element-wise work between the products to kernels (`_gru_forward_kernels`).
    `edits` (an `edits.EditPlan`) changes r z n h where they are computed; with it this
    NumPy code runs, never the kernels.
    """
    T, B, D = x.shape
    H = h0.shape[1]
    dt = x.dtype
    gates = np.empty((T, B, 3 * H), x.dtype)
    matmul(x.reshape(T * B, D), w_ih.T, gates.reshape(T * B, 3 * H))  # all input projections
    if b is not None:
        gates += b
    hs = np.empty((T + 1, B, H), dt)
    hn = np.empty((T, B, H), dt)
    hs[0] = h0
    cache = GRUCache(x, gates, hs, hn, edits)
    rec = np.empty((B, 3 * H if reset_after else 2 * H), dt)  # recurrent products
    nrec = rec[:, 2 * H :] if reset_after else np.empty((B, H), dt)  # (B, H), W_hn's
    nb = kernels(dt, backend) if edits is None else None
    if nb is not None:
        return _gru_forward_kernels(nb, cache, w_hh, b_hn, reset_after, rec, nrec)
    w_rz_t, w_hn_t = w_hh[: 2 * H].T, w_hh[2 * H :].T
    rn = np.empty((B, H), dt)  # r * hn
    for t in range(T):
        a = gates[t]  # (B, 3H): input part of the pre-activations, then the gates, in place
        h_prev, h = hs[t], hs[t + 1]
        rz, r, z, n = a[:, : 2 * H], a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        if reset_after:
            np.matmul(h_prev, w_hh.T, out=rec)
            rz += rec[:, : 2 * H]
            sigmoid(rz, out=rz)  # r, z
            if edits is not None:  # an intervention: change r and z before they are used
                edits.apply(t, "r", r)
                edits.apply(t, "z", z)
            if b_hn is not None:
                np.add(nrec, b_hn, out=hn[t])  # h_{t-1} W_hn^T + b_hn
            else:
                hn[t] = nrec
            n += np.multiply(r, hn[t], out=rn)
        else:
            rz += np.matmul(h_prev, w_rz_t, out=rec)
            sigmoid(rz, out=rz)  # r, z
            if edits is not None:
                edits.apply(t, "r", r)
                edits.apply(t, "z", z)
            np.multiply(r, h_prev, out=hn[t])  # r * h_{t-1}
            n += np.matmul(hn[t], w_hn_t, out=nrec)
        tanh(n, out=n)
        if edits is not None:
            edits.apply(t, "n", n)
        # h = (1 - z) n + z h_prev = n + z (h_prev - n)
        np.subtract(h_prev, n, out=h)
        h *= z
        h += n
        if edits is not None:
            edits.apply(t, "h", h)
    return cache


def _gru_forward_kernels(nb, cache: GRUCache, w_hh, b_hn, reset_after, rec, nrec) -> GRUCache:
    """`gru_forward`'s steps by a backend's kernels: the whole sequence in one call, the
    recurrent products against W_hh^T packed once (`nb.pack`)."""
    gates, hs, hn = cache.gates, cache.hs, cache.hn
    H = hs.shape[2]
    zero_b = np.zeros(H, gates.dtype) if b_hn is None else b_hn
    if reset_after:
        wp_a = wp_n = nb.pack(w_hh.T)  # one product a step, all three blocks
    else:
        wp_a, wp_n = nb.pack(w_hh[: 2 * H].T), nb.pack(w_hh[2 * H :].T)
    T, B = gates.shape[:2]
    args = (gates, hs, hn, wp_a, wp_n, zero_b, b_hn is not None, reset_after, rec, nrec)
    run_rows(nb.gru_fwd_seq, B, T * B * 3 * H * H, *args)  # the batch's rows over threads
    return cache


def gru_backward(cache: GRUCache, dy, dhT, w_ih, w_hh, reset_after, backend=None):
    """BPTT: dy (T, B, H) or None, dhT (B, H) -> dx, dh0, dW_ih, dW_hh, db, db_hn.

    dL/da is kept for a chunk of steps only, and each finished chunk goes through one
    product for dx and one for each weight gradient (as in `lstm_backward`). The step loop
    allocates nothing. After an edited forward (`cache.edits`), each quantity's gradient
    passes through its edit (`EditPlan.grad`) and each gate's derivative is taken at the
    value it computed (`EditPlan.original`), on the NumPy path.
    """
    x, gates, hs, hn, ed = cache.x, cache.gates, cache.hs, cache.hn, cache.edits
    nb = kernels(x.dtype, backend) if ed is None else None
    if nb is not None:  # a backend's kernels instead of the NumPy below
        return _gru_backward_kernels(nb, cache, dy, dhT, w_ih, w_hh, reset_after)
    T, B, D = x.shape
    H = hs.shape[2]
    dt = x.dtype
    w_rz, w_hn = w_hh[: 2 * H], w_hh[2 * H :]
    K = chunk_steps(T, B)
    dax = np.empty((K, B, 3 * H), dt)  # dL/d(input pre-activations) [r, z, n] of a chunk
    dhn = np.empty((K, B, H), dt) if reset_after else None  # dL/d(hn), reset_after form
    dx = np.empty((T, B, D), dt)
    grads = _gru_grads(D, H, dt, reset_after)
    scratch = _gru_grads(D, H, dt, reset_after)  # per-chunk products
    dh = np.array(dhT, dtype=dt)
    t1, t2, drh = np.empty((B, H), dt), np.empty((B, H), dt), np.empty((B, H), dt)
    for end in range(T, 0, -K):
        start = max(0, end - K)
        for t in reversed(range(start, end)):
            k = t - start
            h_prev = hs[t]
            a = gates[t]
            r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            d = dax[k]
            da_r, da_z, da_n = d[:, :H], d[:, H : 2 * H], d[:, 2 * H :]
            if ed is not None:  # an edited forward: its own readable step
                _gru_backward_step_edited(ed, cache, t, dy, dh, d, dhn, k, w_hh, reset_after)
                continue
            if dy is not None:
                dh += dy[t]
            np.multiply(n, n, out=t1)
            np.subtract(1, t1, out=t1)  # 1 - n^2
            np.subtract(1, z, out=t2)
            t1 *= t2
            np.multiply(dh, t1, out=da_n)  # dh (1 - z) (1 - n^2)
            np.subtract(h_prev, n, out=t1)
            np.multiply(z, t2, out=t2)  # z (1 - z)
            t1 *= t2
            np.multiply(dh, t1, out=da_z)  # dh (h_prev - n) z (1 - z)
            np.multiply(r, r, out=t2)
            np.subtract(r, t2, out=t2)  # r (1 - r)
            dh *= z
            if reset_after:
                np.multiply(da_n, hn[t], out=da_r)
                da_r *= t2
                np.multiply(da_n, r, out=dhn[k])
                dh += np.matmul(dhn[k], w_hn, out=t1)
            else:
                np.matmul(da_n, w_hn, out=drh)  # (B, H)
                np.multiply(drh, h_prev, out=da_r)
                da_r *= t2
                dh += np.multiply(drh, r, out=t1)
            dh += np.matmul(d[:, : 2 * H], w_rz, out=t1)
        _gru_chunk_products(dax, dhn, x, hs, hn, dx, start, end, w_ih, grads, scratch)
    return dx, dh, *grads


def _gru_grads(D: int, H: int, dt, reset_after: bool) -> tuple:
    """Zeros for (dW_ih, dW_hh, db, db_hn); db_hn None without reset_after."""
    db_hn = np.zeros(H, dt) if reset_after else None
    return np.zeros((3 * H, D), dt), np.zeros((3 * H, H), dt), np.zeros(3 * H, dt), db_hn


def _gru_chunk_products(dax, dhn, x, hs, hn, dx, start, end, w_ih, grads, scratch):
    """One chunk's dx = da W_ih and its sums into grads = (dW_ih, dW_hh, db, db_hn), from
    dax (K, B, 3H) and (reset_after) dhn (K, B, H); x, hs, hn, dx may be a block of the
    batch's rows (then the inputs are copied, dx written back)."""
    dw_ih, dw_hh, db, db_hn = grads
    k_ih, k_hh, k_b, _ = scratch
    B, D = x.shape[1], x.shape[2]
    H = hs.shape[2]
    n_rows = (end - start) * B
    d2 = dax[: end - start].reshape(n_rows, 3 * H)
    h_prev_all = hs[start:end].reshape(n_rows, H)
    matmul_block(d2, w_ih, dx[start:end])
    dw_ih += np.matmul(d2.T, x[start:end].reshape(n_rows, D), out=k_ih)
    dw_hh[: 2 * H] += np.matmul(d2[:, : 2 * H].T, h_prev_all, out=k_hh[: 2 * H])
    db += np.sum(d2, axis=0, out=k_b)
    if db_hn is not None:  # reset_after: W_hn's gradient from dL/d(hn)
        dhn2 = dhn[: end - start].reshape(n_rows, H)
        dw_hh[2 * H :] += np.matmul(dhn2.T, h_prev_all, out=k_hh[2 * H :])
        db_hn += np.sum(dhn2, axis=0, out=k_b[:H])
    else:
        hn2 = hn[start:end].reshape(n_rows, H)
        dw_hh[2 * H :] += np.matmul(d2[:, 2 * H :].T, hn2, out=k_hh[2 * H :])


def _gru_backward_kernels(nb, cache: GRUCache, dy, dhT, w_ih, w_hh, reset_after):
    """`gru_backward` by a backend's kernels: each chunk's steps in one call, W_hh's blocks
    packed once, the batch's rows in blocks over threads, each block through every chunk on
    its own (as `lstm._lstm_backward_kernels`)."""
    x, gates, hs, hn = cache.x, cache.gates, cache.hs, cache.hn
    T, B, D = x.shape
    H = hs.shape[2]
    dt = x.dtype
    K = chunk_steps(T, B)
    dx = np.empty((T, B, D), dt)
    dh = np.array(dhT, dtype=dt)  # (B, H), each block its rows
    tmp = np.empty((B, H), dt)
    dys = dy if dy is not None else dh[None]  # (T, B, H), or a stand-in, never read
    wp_rz, wp_n = nb.pack(w_hh[: 2 * H]), nb.pack(w_hh[2 * H :])  # packed once

    def rows(b0, b1):
        dax = np.empty((K, b1 - b0, 3 * H), dt)  # the block's dL/da of one chunk
        dhn = np.empty((K, b1 - b0, H), dt) if reset_after else dax  # (else a stand-in)
        grads = _gru_grads(D, H, dt, reset_after)
        scratch = _gru_grads(D, H, dt, reset_after)
        blocks = (x[:, b0:b1], hs[:, b0:b1], hn[:, b0:b1], dx[:, b0:b1])
        for end in range(T, 0, -K):
            start = max(0, end - K)
            args = (start, end, dh, dys, dy is not None, gates, hs, hn, dax, dhn, wp_rz, wp_n)
            nb.gru_bwd_seq(*args, reset_after, tmp, b0, b1)
            _gru_chunk_products(dax, dhn, *blocks, start, end, w_ih, grads, scratch)
        return grads

    grads = sum_blocks(run_blocks(rows, B, T * B * 3 * H * H))
    return dx, dh, *grads


def _gru_backward_step_edited(ed, cache: GRUCache, t, dy, dh, d, dhn, k, w_hh, reset_after):
    """Step t of `gru_backward` after an edited forward: d (B, 3H) = dL/da; dh (B, H)
    becomes dh_{t-1} in place; reset_after: dhn[k] = dL/d(hn). r, z, n are the edited gates
    (what later steps read); r0, z0, n0 the values computed, where their derivatives are."""
    H = dh.shape[1]
    a, h_prev = cache.gates[t], cache.hs[t]
    r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
    r0, z0, n0 = (ed.original(t, q, v) for q, v in zip("rzn", (r, z, n)))
    w_rz, w_hn = w_hh[: 2 * H], w_hh[2 * H :]
    g = dh + dy[t] if dy is not None else dh.copy()
    g = ed.grad(t, "h", g)  # dL/dh_t before its edit
    d[:, 2 * H :] = ed.grad(t, "n", g * (1 - z)) * (1 - n0 * n0)  # da_n
    d[:, H : 2 * H] = ed.grad(t, "z", g * (h_prev - n)) * z0 * (1 - z0)  # da_z
    dh_prev = g * z
    if reset_after:
        d[:, :H] = ed.grad(t, "r", d[:, 2 * H :] * cache.hn[t]) * r0 * (1 - r0)
        dhn[k] = d[:, 2 * H :] * r
        dh_prev += dhn[k] @ w_hn
    else:
        drh = d[:, 2 * H :] @ w_hn  # dL/d(r * h_{t-1})
        d[:, :H] = ed.grad(t, "r", drh * h_prev) * r0 * (1 - r0)
        dh_prev += drh * r
    dh[...] = dh_prev + d[:, : 2 * H] @ w_rz


# --------------------------------------------------------------------------------------------
# The public classes


class GRUCell:
    """One GRU step with its own parameters: `h, cache = cell.forward(x, h_prev)`.

    `backward(dh, cache)` returns (dx, dh_prev) and *accumulates* parameter gradients into
    `grads`; call `zero_grad()` before a new sequence.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        bias: bool = True,
        reset_after: bool = False,
        update_bias: float = 0.0,
        seed: Seed = 0,
        dtype: object = np.float64,
    ) -> None:
        layer = GRU(
            input_size,
            hidden_size,
            bias=bias,
            reset_after=reset_after,
            update_bias=update_bias,
            seed=seed,
            dtype=dtype,
        )
        self.reset_after = reset_after
        self.params = layer.layer_params(0)
        self.grads = {n: np.zeros_like(p) for n, p in self.params.items()}

    def forward(self, x: np.ndarray, h_prev: np.ndarray):
        p = self.params
        return gru_cell_forward(
            x,
            h_prev,
            p["weight_ih"],
            p["weight_hh"],
            p.get("bias"),
            p.get("bias_hn"),
            self.reset_after,
        )

    def backward(self, dh: np.ndarray, cache):
        p = self.params
        dx, dh_prev, dw_ih, dw_hh, db, db_hn = gru_cell_backward(
            dh, cache, p["weight_ih"], p["weight_hh"], self.reset_after
        )
        for name, value in (
            ("weight_ih", dw_ih),
            ("weight_hh", dw_hh),
            ("bias", db),
            ("bias_hn", db_hn),
        ):
            if name in self.grads:
                self.grads[name] += value
        return dx, dh_prev

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0


class GRU(Recurrent):
    """A stack of GRU layers. `y, h = gru(x, h0)`; trace keys r z n h.

    Parameters per layer k: weight_ih_lk (3H, D), weight_hh_lk (3H, H), bias_lk (3H,), and
    bias_hn_lk (H,) when `reset_after=True` (PyTorch's form; the default is the textbook
    chapter's).

    h_t = (1 - z) n + z h_{t-1}: z = 1 keeps the state. `update_bias` initialises the update
    gate's bias (default 0, as PyTorch and the textbook chapter): the GRU's forget bias. With 0,
    z ~ 0.5 halves the direct path dh_{t-1} = z dh_t at every step, and a GRU stays at chance
    on recall at T = 50; with 3 (z ~ 0.95) it solves it in 250-300 steps (docs/training.md,
    "The GRU and its update bias").
    """

    arch = "gru"
    gates = 3
    state_names = ("h",)
    trace_names = ("r", "z", "n", "h")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = True,
        reset_after: bool = False,
        update_bias: float = 0.0,
        bidirectional: bool = False,
        seed: Seed = 0,
        dtype: object = np.float64,
    ) -> None:
        config = RecurrentConfig(
            "gru",
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dtype=as_float_dtype(dtype).name,
            reset_after=bool(reset_after),
            update_bias=float(update_bias),
            bidirectional=bool(bidirectional),
        )
        super().__init__(config, as_generator(seed))

    def _init_layer(self, d_in, rng):
        H = self.hidden_size
        w_ih, w_hh = init_packed(rng, 3, d_in, H)
        p = {"weight_ih": w_ih, "weight_hh": w_hh}
        if self.config.bias:
            p["bias"] = np.zeros(3 * H)
            p["bias"][H : 2 * H] = self.config.update_bias  # [r, z, n]
            if self.config.reset_after:
                p["bias_hn"] = np.zeros(H)
        return p

    def _layer_forward(self, p, x, state0, edits=None):
        (h0,) = state0
        cache = gru_forward(
            x,
            h0,
            p["weight_ih"],
            p["weight_hh"],
            p.get("bias"),
            p.get("bias_hn"),
            self.config.reset_after,
            edits=edits,
        )
        return (cache.hs[-1].copy(),), cache

    def _layer_backward(self, p, cache, dy, dstate):
        (dhT,) = dstate
        dx, dh0, dw_ih, dw_hh, db, db_hn = gru_backward(
            cache, dy, dhT, p["weight_ih"], p["weight_hh"], self.config.reset_after
        )
        grads = {"weight_ih": dw_ih, "weight_hh": dw_hh}
        if "bias" in p:
            grads["bias"] = db
        if "bias_hn" in p:
            grads["bias_hn"] = db_hn
        return dx, (dh0,), grads

    def _layer_trace(self, cache):
        H = self.hidden_size
        g = cache.gates
        return {"r": g[:, :, :H], "z": g[:, :, H : 2 * H], "n": g[:, :, 2 * H :], "h": cache.hs[1:]}
