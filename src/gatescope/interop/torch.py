"""PyTorch import and export: `from_torch(module)` and `to_torch(model)`; and
`trace_torch(model, *inputs, loss_fn=None)`, which traces every recurrent module inside a
whole PyTorch model (gates, states and, along the user's loss, dL/dh_t at every step).

PyTorch keeps two bias vectors per layer, b_ih and b_hh, that always appear summed, except
inside the GRU's reset product (n = tanh(W_in x + b_in + r * (W_hn h + b_hn))). gatescope
keeps one bias per layer (the textbook chapter's parameter count), so importing sums them, and a GRU
keeps b_hn apart as `bias_hn` with `reset_after=True`. Exporting puts the whole bias into
b_ih and zeros into b_hh (b_hn for the GRU). Both directions are exact up to the rounding of
that one sum; torch is imported lazily, so gatescope itself never needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..nn import Recurrent, RecurrentConfig, build_recurrent
from ..nn.checks import as_float_dtype
from ._extras import require

_TORCH_DTYPES = ("float32", "float64")


def _arch_of(module: Any) -> str:
    import torch.nn as tnn

    for cls, arch in ((tnn.LSTM, "lstm"), (tnn.GRU, "gru"), (tnn.RNN, "rnn")):
        if isinstance(module, cls):
            return arch
    raise ValueError(f"from_torch expects torch.nn.LSTM, GRU or RNN, got {type(module).__name__}")


def from_torch(module: Any) -> Recurrent:
    """A gatescope LSTM/GRU/RNN computing exactly what `module` computes (in eval mode).

    Any num_layers, batch_first either way, with or without bias, bidirectional or not
    (the `_reverse` parameters keep their names). LSTM projections (proj_size > 0) are
    refused; dropout between layers only acts in training mode in PyTorch and has no
    gatescope equivalent, so it is ignored.
    """
    arch = _arch_of(module)
    if getattr(module, "proj_size", 0):
        raise ValueError("from_torch: LSTM with proj_size > 0 is not supported")
    dtype = str(module.weight_ih_l0.dtype).removeprefix("torch.")
    if dtype not in _TORCH_DTYPES:
        raise ValueError(f"from_torch: weights must be float32 or float64, got {dtype}")
    H = module.hidden_size
    config = RecurrentConfig(
        arch=arch,
        input_size=module.input_size,
        hidden_size=H,
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        dtype=dtype,
        reset_after=arch == "gru",
        nonlinearity=getattr(module, "nonlinearity", "tanh"),
        bidirectional=bool(module.bidirectional),
    )
    model = build_recurrent(config)
    for k in range(config.num_layers):
        for suffix in ("", "_reverse") if config.bidirectional else ("",):
            s = f"_l{k}{suffix}"

            def get(name: str, s: str = s) -> np.ndarray:
                return getattr(module, f"{name}{s}").detach().cpu().numpy().astype(dtype)

            model.params[f"weight_ih{s}"][...] = get("weight_ih")
            model.params[f"weight_hh{s}"][...] = get("weight_hh")
            if config.bias:
                b_ih, b_hh = get("bias_ih"), get("bias_hh")
                if arch == "gru":
                    model.params[f"bias{s}"][...] = b_ih
                    model.params[f"bias{s}"][: 2 * H] += b_hh[: 2 * H]
                    model.params[f"bias_hn{s}"][...] = b_hh[2 * H :]
                else:
                    model.params[f"bias{s}"][...] = b_ih + b_hh
    return model


def to_torch(model: Recurrent) -> Any:
    """The torch.nn.LSTM / GRU / RNN equivalent of a gatescope model, same dtype."""
    import torch

    c = model.config
    if c.arch == "lstm" and c.variant != "vanilla":
        raise ValueError(
            f"to_torch: torch.nn.LSTM has no {c.variant!r} variant; only variant='vanilla' "
            "LSTMs can be exported"
        )
    if c.arch == "gru" and not c.reset_after:
        raise ValueError(
            "to_torch: PyTorch's GRU applies the reset gate after the recurrent product; "
            "this GRU has reset_after=False, which PyTorch cannot express"
        )
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[c.arch]
    kwargs = {"nonlinearity": c.nonlinearity} if c.arch == "rnn" else {}
    module = cls(
        c.input_size,
        c.hidden_size,
        num_layers=c.num_layers,
        bias=c.bias,
        batch_first=c.batch_first,
        bidirectional=c.bidirectional,
        dtype=getattr(torch, c.dtype),
        **kwargs,
    )
    H = c.hidden_size
    with torch.no_grad():
        for k in range(c.num_layers):
            for reverse in (False, True) if c.bidirectional else (False,):
                p = model.layer_params(k, reverse)
                s = f"_l{k}_reverse" if reverse else f"_l{k}"

                def put(name: str, value: np.ndarray, s: str = s) -> None:
                    getattr(module, f"{name}{s}").copy_(
                        torch.from_numpy(np.ascontiguousarray(value))
                    )

                put("weight_ih", p["weight_ih"])
                put("weight_hh", p["weight_hh"])
                if c.bias:
                    b_hh = np.zeros_like(p["bias"])
                    if c.arch == "gru":
                        b_hh[2 * H :] = p["bias_hn"]
                    put("bias_ih", p["bias"])
                    put("bias_hh", b_hh)
    return module


# --------------------------------------------------------------------------------------------
# Any PyTorch model: trace every recurrent module inside it


@dataclass
class TorchTrace:
    """One call of one torch.nn.LSTM / GRU / RNN inside a model, replayed in gatescope.

    Every array is batch-first and in the replay's dtype (float64 by default), whatever the
    module's own layout; H is the module's hidden_size, H' = 2H when it is bidirectional
    (forward units first, as in its output), L its num_layers. A stacked module gives every
    trace entry, dh and dc a leading layer axis (L, B, T, H'), as `Recurrent.trace` does.
    """

    module: str  # the module's name in model.named_modules() ("" for the model itself)
    layer: Recurrent  # the gatescope replica (batch-first) that computed everything below
    x: np.ndarray  # (B, T, D) the module's input (padded with zeros if it was packed)
    state0: Any  # the initial state passed to the module, gatescope's structure, or None
    trace: dict[str, np.ndarray]  # every gate and state at every step, (B, T, H') each
    y: np.ndarray  # (B, T, H') the module's output, equal to torch's
    state: Any  # the final state, gatescope's structure ((B, H), or (L * dirs, B, H))
    lengths: np.ndarray | None = None  # (B,) per-sequence lengths of a PackedSequence input;
    # entries at t >= lengths[b] are NaN (undefined), state is taken at each last real step
    dh: np.ndarray | None = None  # dL/dh_t (B, T, H') along loss_fn, every path included
    dc: np.ndarray | None = None  # dL/dc_t likewise (LSTM): the carry along the cell from
    # t+1 plus the path through h_t = o_t tanh(c_t), as torch's c_t.retain_grad() gives
    dstate0: Any = None  # dL/d(initial state), gatescope's structure


def _replica(module: Any, dtype: str) -> Recurrent:
    """from_torch(module), batch-first and in `dtype` (weights converted exactly upwards)."""
    src = from_torch(module)
    config = replace(src.config, batch_first=True, dtype=dtype)
    layer = build_recurrent(config)
    for name, p in src.params.items():
        layer.params[name][...] = p
    return layer


def _stacked(layer: Recurrent, state: Any) -> list[np.ndarray]:
    """Public state -> its arrays, each (L * dirs, B, H)."""
    parts = list(state) if isinstance(state, tuple | list) else [state]
    return [p[None] if p.ndim == 2 else p for p in parts]


def _public(layer: Recurrent, parts: list[np.ndarray]) -> Any:
    """Arrays (L * dirs, B, H) -> the public state structure of `layer`."""
    parts = [p[0] if p.shape[0] == 1 else p for p in parts]
    return tuple(parts) if len(parts) > 1 else parts[0]


def _to_numpy(t: Any, dtype: str) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype)


def _state_gradients(
    layer: Recurrent, x: np.ndarray, state0: Any, dy: np.ndarray, dstate: Any
) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """dL/dh_t (and dL/dc_t) of every layer and direction, and dL/d(initial state).

    Both are total derivatives with the state as a node of the graph (what torch's
    retain_grad gives): dL/dc_t = G_c + dL/dh_t o_t (1 - tanh(c_t)^2), where G_c, the
    gradient carried along the cell from step t+1 (h_t held fixed), is state_gradients'.

    Each direction of each layer is measured on its own (`layer.direction`) by
    `gatescope.inspect.state_gradients`, top layer first: its dL/dy is the given dy's half
    (the reverse direction's in its own, reversed, time), or the layer above's dL/dx.
    """
    from ..inspect import state_gradients

    B, T, _ = x.shape
    L, nd, H = layer.num_layers, layer.num_directions, layer.hidden_size
    lstm = len(layer.state_names) == 2
    trace = layer.trace
    inputs = [x] + [trace["h"][k] if L > 1 else trace["h"] for k in range(L - 1)]
    s0 = _stacked(layer, state0 if state0 is not None else layer.zero_state(B))
    ds = _stacked(layer, dstate if dstate is not None else layer.zero_state(B))
    dh = np.empty((L, B, T, nd * H), layer.dtype)
    dc = np.empty_like(dh) if lstm else None
    d0 = [np.empty_like(p) for p in s0]  # each (L * dirs, B, H)
    g_y = dy  # (B, T, nd H): dL/d(this layer's output)
    for k in reversed(range(L)):
        g_x = np.zeros_like(inputs[k])  # (B, T, D_k)
        for d in range(nd):
            sub = layer.direction(k, reverse=bool(d))
            i = nd * k + d

            def own(a: np.ndarray, d: int = d) -> np.ndarray:  # real time <-> own time
                return np.ascontiguousarray(a[:, ::-1] if d else a)

            xin, dy_d = own(inputs[k]), own(g_y[:, :, d * H : (d + 1) * H])
            st0 = _public(sub, [p[i : i + 1] for p in s0])
            dst = _public(sub, [p[i : i + 1] for p in ds])
            G = state_gradients(sub, xin, dy=dy_d, dstate=dst, state0=st0)  # (B, T + 1, H)
            dh[k, :, :, d * H : (d + 1) * H] = own(G["h"][:, 1:])
            for p, name in zip(d0, sub.state_names, strict=True):
                p[i] = G[name][:, 0]
            sub(xin, st0)
            if dc is not None:  # the carry G_c (h_t held fixed) plus the path through h_t
                o, tc = sub.trace["o"], np.tanh(sub.trace["c"])  # (B, T, H) own time
                total = G["c"][:, 1:] + G["h"][:, 1:] * o * (1 - tc**2)
                dc[k, :, :, d * H : (d + 1) * H] = own(total)
            g_x += own(sub.backward(dy_d, dst))
        g_y = g_x
    if L == 1:
        dh = dh[0]
        dc = None if dc is None else dc[0]
    return dh, dc, _public(layer, d0)


def _replay(
    layer: Recurrent,
    x: np.ndarray,
    state0: Any,
    lengths: np.ndarray | None,
    dy: np.ndarray | None,
    dstate: Any,
    grads: bool,
) -> tuple[dict, np.ndarray, Any, np.ndarray | None, np.ndarray | None, Any]:
    """Run `layer` on x (and its gradients): trace, y, state, dh, dc, dstate0; with lengths,
    each sequence alone on its real steps (the rest NaN)."""
    B, T, _ = x.shape
    if dy is None:
        dy = np.zeros((B, T, layer.output_size), layer.dtype)
    if lengths is None:
        y, state = layer(x, state0)
        trace = layer.trace
        out = _state_gradients(layer, x, state0, dy, dstate) if grads else (None, None, None)
        return trace, y, state, *out
    parts = []
    for b, n in enumerate(lengths):
        sel = slice(b, b + 1)

        def one(s: Any, sel: slice = sel) -> Any:
            return None if s is None else _public(layer, [p[:, sel] for p in _stacked(layer, s)])

        xb = x[sel, :n]
        yb, sb = layer(xb, one(state0))
        tb = layer.trace
        gb = _state_gradients(layer, xb, one(state0), dy[sel, :n], one(dstate)) if grads else None
        parts.append((n, tb, yb, sb, gb))

    def padded(a: np.ndarray, n: int) -> np.ndarray:  # (..., 1, n, F) -> (..., 1, T, F)
        pad = [(0, 0)] * a.ndim
        pad[-2] = (0, T - n)
        return np.pad(a, pad, constant_values=np.nan)

    def cat(arrays: list[np.ndarray], axis: int) -> np.ndarray:
        return np.concatenate(arrays, axis=axis)

    bax = -3  # the batch axis of (..., B, T, F) arrays
    trace = {
        name: cat([padded(p[1][name], p[0]) for p in parts], bax) for name in layer.trace_names
    }
    y = cat([padded(p[2], p[0]) for p in parts], 0)
    state = _public(layer, [cat(a, 1) for a in zip(*[_stacked(layer, p[3]) for p in parts])])
    if not grads:
        return trace, y, state, None, None, None
    dh = cat([padded(p[4][0], p[0]) for p in parts], bax)
    dc = None if parts[0][4][1] is None else cat([padded(p[4][1], p[0]) for p in parts], bax)
    d0 = _public(layer, [cat(a, 1) for a in zip(*[_stacked(layer, p[4][2]) for p in parts])])
    return trace, y, state, dh, dc, d0


def trace_torch(
    model: Any,
    *inputs: Any,
    loss_fn: Callable[[Any], Any] | None = None,
    dtype: object = np.float64,
) -> dict[str, TorchTrace | list[TorchTrace]]:
    """Run a whole PyTorch model unchanged and trace every nn.LSTM / GRU / RNN inside it.

    `model(*inputs)` runs once, with forward hooks on each recurrent submodule capturing
    its input, initial state (when given) and output. Each call is replayed in gatescope
    (`from_torch` weights, in `dtype`, float64 by default) and checked against torch's
    output. Returns {module name: TorchTrace}, or a list of TorchTrace in call order for a
    module the forward called more than once; modules it never called are left out.

    With `loss_fn(outputs) -> scalar tensor` (outputs = model(*inputs)), torch's autograd
    gives dL/dy of each call and dL/d(final state) where that state is used downstream
    (each measured through a zero "probe" tensor added to the output, which changes no
    value); gatescope's backward through the replica then gives the per-step dL/dh_t and
    dL/dc_t along the user's own loss (`TorchTrace.dh`, `.dc`, `.dstate0`).

    PackedSequence inputs are handled exactly: each sequence is replayed alone on its real
    steps; trace, y, dh and dc are NaN beyond its length and the final state is the one at
    its last real step (as PyTorch's). Unbatched (2-D) inputs and LSTM projections are
    refused. Raises ValueError when the replay disagrees with torch beyond rounding (dropout
    between layers in training mode; weights changed during the forward).
    """
    torch = require("torch", "torch", "trace_torch")
    import torch.nn as tnn
    from torch.nn.utils.rnn import PackedSequence

    dt = as_float_dtype(dtype).name
    if not isinstance(model, tnn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, tnn.LSTM | tnn.GRU | tnn.RNN)
    ]
    if not targets:
        raise ValueError(f"model: {type(model).__name__} holds no torch.nn.LSTM, GRU or RNN module")
    for name, m in targets:  # refused before running the model, not inside its forward
        if getattr(m, "proj_size", 0):
            raise ValueError(
                f"trace_torch: module {name!r}: LSTM with proj_size > 0 is not supported"
            )
    calls: list[dict[str, Any]] = []

    def hook(name: str) -> Callable:
        def capture(mod: Any, args: tuple, kwargs: dict, output: Any) -> Any:
            x = args[0] if args else kwargs["input"]
            hx = args[1] if len(args) > 1 else kwargs.get("hx")
            call = {"name": name, "module": mod, "layer": _replica(mod, dt), "x": x, "hx": hx}
            y, st = output
            call["y"], call["state"] = y, st
            calls.append(call)
            if loss_fn is None:
                return None
            y_data = y.data if isinstance(y, PackedSequence) else y
            parts = list(st) if isinstance(st, tuple) else [st]
            call["probes"] = [torch.zeros_like(t, requires_grad=True) for t in [y_data, *parts]]
            new_y = y_data + call["probes"][0]
            if isinstance(y, PackedSequence):
                new_y = y._replace(data=new_y)
            new_st = [t + p for t, p in zip(parts, call["probes"][1:], strict=True)]
            return new_y, (tuple(new_st) if isinstance(st, tuple) else new_st[0])

        return capture

    handles = [m.register_forward_hook(hook(n), with_kwargs=True) for n, m in targets]
    try:
        if loss_fn is None:
            with torch.no_grad():
                model(*inputs)
            grads: list[Any] = []
        else:
            with torch.enable_grad():
                loss = loss_fn(model(*inputs))
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise ValueError("loss_fn must return a scalar tensor")
                probes = [p for c in calls for p in c["probes"]]
                if not loss.requires_grad:
                    raise ValueError(
                        "loss_fn: the loss does not depend on any recurrent module's output"
                    )
                grads = list(torch.autograd.grad(loss, probes, allow_unused=True))
    finally:
        for h in handles:
            h.remove()

    results: dict[str, list[TorchTrace]] = {}
    for call in calls:
        results.setdefault(call["name"], []).append(_trace_call(call, grads, loss_fn, dt))
    return {n: r[0] if len(r) == 1 else r for n, r in results.items()}


def _trace_call(call: dict, grads: list[Any], loss_fn: Any, dt: str) -> TorchTrace:
    """Replay one captured call in gatescope, check it, and attach its gradients."""
    from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

    mod, layer, name = call["module"], call["layer"], call["name"]
    bf = mod.batch_first
    who = f"trace_torch: module {name!r}"

    def batch_first(t: Any) -> np.ndarray:
        a = _to_numpy(t, dt)
        return a if bf else a.transpose(1, 0, 2)

    x, lengths = call["x"], None
    if isinstance(x, PackedSequence):
        padded, lens = pad_packed_sequence(x, batch_first=True)
        x, lengths = _to_numpy(padded, dt), lens.numpy().astype(int)
    elif x.dim() != 3:
        raise ValueError(f"{who}: unbatched ({x.dim()}-D) input; pass a batch (B, T, D)")
    else:
        x = batch_first(x)
    hx = call["hx"]
    state0 = None
    if hx is not None:
        parts = list(hx) if isinstance(hx, tuple) else [hx]
        state0 = _public(layer, [_to_numpy(p, dt) for p in parts])

    dy = dstate = None
    if loss_fn is not None:
        n_parts = len(layer.state_names)
        mine = [grads.pop(0) for _ in range(1 + n_parts)]
        g_y = mine[0]
        if g_y is not None and isinstance(call["y"], PackedSequence):
            g_y = pad_packed_sequence(call["y"]._replace(data=g_y), batch_first=True)[0]
            dy = _to_numpy(g_y, dt)
        elif g_y is not None:
            dy = batch_first(g_y)
        if any(g is not None for g in mine[1:]):
            st = list(call["state"]) if isinstance(call["state"], tuple) else [call["state"]]
            dstate = _public(
                layer,
                [
                    np.zeros(s.shape, dt) if g is None else _to_numpy(g, dt)
                    for g, s in zip(mine[1:], st, strict=True)
                ],
            )
    trace, y, state, dh, dc, d0 = _replay(
        layer, x, state0, lengths, dy, dstate, loss_fn is not None
    )

    ty = call["y"]
    if isinstance(ty, PackedSequence):
        ty = _to_numpy(pad_packed_sequence(ty, batch_first=True)[0], dt)
    else:
        ty = batch_first(ty)
    got = np.where(np.isnan(y), 0.0, y)
    err = float(np.max(np.abs(got - ty))) if y.size else 0.0
    tol = 1e-8 if str(mod.weight_ih_l0.dtype) == "torch.float64" else 1e-4
    if not err <= tol * max(1.0, float(np.max(np.abs(ty)))):
        why = (
            "dropout between layers is active in training mode: call model.eval()"
            if mod.training and mod.dropout > 0 and mod.num_layers > 1
            else "the module's weights or inputs changed during the forward, or it is not "
            "a plain torch.nn module"
        )
        raise ValueError(
            f"{who}: gatescope's replay differs from torch's output by {err:.3g} "
            f"(tolerance {tol:g}): {why}"
        )
    return TorchTrace(
        module=name,
        layer=layer,
        x=x,
        state0=state0,
        trace=trace,
        y=y,
        state=state,
        lengths=lengths,
        dh=dh,
        dc=dc,
        dstate0=d0,
    )
