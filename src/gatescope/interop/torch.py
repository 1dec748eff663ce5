"""PyTorch import and export: `from_torch(module)` and `to_torch(model)`.

PyTorch keeps two bias vectors per layer, b_ih and b_hh, that always appear summed, except
inside the GRU's reset product (n = tanh(W_in x + b_in + r * (W_hn h + b_hn))). gatescope
keeps one bias per layer (the textbook chapter's parameter count), so importing sums them, and a GRU
keeps b_hn apart as `bias_hn` with `reset_after=True`. Exporting puts the whole bias into
b_ih and zeros into b_hh (b_hn for the GRU). Both directions are exact up to the rounding of
that one sum; torch is imported lazily, so gatescope itself never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..nn import Recurrent, RecurrentConfig, build_recurrent

_TORCH_DTYPES = ("float32", "float64")


def _arch_of(module: Any) -> str:
    import torch.nn as tnn

    for cls, arch in ((tnn.LSTM, "lstm"), (tnn.GRU, "gru"), (tnn.RNN, "rnn")):
        if isinstance(module, cls):
            return arch
    raise ValueError(f"from_torch expects torch.nn.LSTM, GRU or RNN, got {type(module).__name__}")


def from_torch(module: Any) -> Recurrent:
    """A gatescope LSTM/GRU/RNN computing exactly what `module` computes (in eval mode).

    Any num_layers, batch_first either way, with or without bias. Bidirectional modules and
    LSTM projections (proj_size > 0) are refused; dropout between layers only acts in
    training mode in PyTorch and has no gatescope equivalent, so it is ignored.
    """
    arch = _arch_of(module)
    if module.bidirectional:
        raise ValueError("from_torch: bidirectional modules are not supported")
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
    )
    model = build_recurrent(config)
    for k in range(config.num_layers):

        def get(name: str, k: int = k) -> np.ndarray:
            return getattr(module, f"{name}_l{k}").detach().cpu().numpy().astype(dtype)

        model.params[f"weight_ih_l{k}"][...] = get("weight_ih")
        model.params[f"weight_hh_l{k}"][...] = get("weight_hh")
        if config.bias:
            b_ih, b_hh = get("bias_ih"), get("bias_hh")
            if arch == "gru":
                model.params[f"bias_l{k}"][...] = b_ih
                model.params[f"bias_l{k}"][: 2 * H] += b_hh[: 2 * H]
                model.params[f"bias_hn_l{k}"][...] = b_hh[2 * H :]
            else:
                model.params[f"bias_l{k}"][...] = b_ih + b_hh
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
        dtype=getattr(torch, c.dtype),
        **kwargs,
    )
    H = c.hidden_size
    with torch.no_grad():
        for k in range(c.num_layers):
            p = model.layer_params(k)

            def put(name: str, value: np.ndarray, k: int = k) -> None:
                getattr(module, f"{name}_l{k}").copy_(torch.from_numpy(np.ascontiguousarray(value)))

            put("weight_ih", p["weight_ih"])
            put("weight_hh", p["weight_hh"])
            if c.bias:
                b_hh = np.zeros_like(p["bias"])
                if c.arch == "gru":
                    b_hh[2 * H :] = p["bias_hn"]
                put("bias_ih", p["bias"])
                put("bias_hh", b_hh)
    return module
