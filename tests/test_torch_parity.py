"""Parity with PyTorch after copying weights: loss (y * dy).sum() + state terms, float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gatescope as gs

pytestmark = pytest.mark.torch

ATOL = 1e-10
MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
CASES = [
    ("lstm", {}),
    ("gru", {}),
    ("rnn", {"nonlinearity": "tanh"}),
    ("rnn", {"nonlinearity": "relu"}),
]


def torch_module(arch, opts, D, H, L, bias, batch_first, seed):
    torch.manual_seed(seed)
    m = MODULES[arch](
        D, H, num_layers=L, bias=bias, batch_first=batch_first, dtype=torch.float64, **opts
    )
    with torch.no_grad():  # PyTorch's init is small; make the weights matter
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m


@pytest.mark.parametrize("arch,opts", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_matches_forward_and_backward(arch, opts, num_layers, batch_first, bias):
    B, T, D, H = 3, 7, 4, 5
    m = torch_module(arch, opts, D, H, num_layers, bias, batch_first, seed=num_layers)
    model = gs.from_torch(m)
    assert model.config.batch_first == batch_first
    rng = np.random.default_rng(0)
    shape = (B, T, D) if batch_first else (T, B, D)
    x = rng.normal(size=shape)
    h0 = rng.normal(size=(num_layers, B, H))
    c0 = rng.normal(size=(num_layers, B, H))
    dy = rng.normal(size=shape[:2] + (H,))
    dh = rng.normal(size=(num_layers, B, H))
    dc = rng.normal(size=(num_layers, B, H))

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    tc0 = torch.tensor(c0, requires_grad=True)
    if arch == "lstm":
        ty, (thT, tcT) = m(tx, (th0, tc0))
        loss = (
            (ty * torch.tensor(dy)).sum()
            + (thT * torch.tensor(dh)).sum()
            + (tcT * torch.tensor(dc)).sum()
        )
    else:
        ty, thT = m(tx, th0)
        loss = (ty * torch.tensor(dy)).sum() + (thT * torch.tensor(dh)).sum()
    loss.backward()

    # gatescope's state drops the layer axis when num_layers == 1, as its contract says
    def st(a):
        return a[0] if num_layers == 1 else a

    if arch == "lstm":
        y, (hT, cT) = model(x, (st(h0), st(c0)))
        dx = model.backward(dy, (st(dh), st(dc)))
        np.testing.assert_allclose(cT, st(tcT.detach().numpy()), rtol=0, atol=ATOL)
        dh0, dc0 = model.dstate0
        np.testing.assert_allclose(dc0, st(tc0.grad.numpy()), rtol=0, atol=ATOL)
    else:
        y, hT = model(x, st(h0))
        dx = model.backward(dy, st(dh))
        dh0 = model.dstate0
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(hT, st(thT.detach().numpy()), rtol=0, atol=ATOL)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(dh0, st(th0.grad.numpy()), rtol=0, atol=ATOL)

    # parameter gradients: PyTorch's two biases both receive the gradient of their sum
    for k in range(num_layers):
        tp = {n: getattr(m, f"{n}_l{k}").grad.numpy() for n in ("weight_ih", "weight_hh")}
        for n in ("weight_ih", "weight_hh"):
            np.testing.assert_allclose(model.grads[f"{n}_l{k}"], tp[n], rtol=0, atol=ATOL)
        if bias:
            b_ih = getattr(m, f"bias_ih_l{k}").grad.numpy()
            b_hh = getattr(m, f"bias_hh_l{k}").grad.numpy()
            np.testing.assert_allclose(model.grads[f"bias_l{k}"], b_ih, rtol=0, atol=ATOL)
            if arch == "gru":
                np.testing.assert_allclose(
                    model.grads[f"bias_hn_l{k}"], b_hh[2 * H :], rtol=0, atol=ATOL
                )
            else:
                np.testing.assert_allclose(model.grads[f"bias_l{k}"], b_hh, rtol=0, atol=ATOL)


@pytest.mark.parametrize("arch,opts", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_torch_round_trip(arch, opts, dtype):
    model = {"lstm": gs.LSTM, "gru": gs.GRU, "rnn": gs.RNN}[arch](
        3, 4, 2, seed=5, dtype=dtype, **({"reset_after": True} if arch == "gru" else opts)
    )
    m = gs.to_torch(model)
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(dtype)
    y, _ = model(x)
    with torch.no_grad():
        ty, _ = m(torch.from_numpy(x))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y, ty.numpy(), rtol=0, atol=tol)
    back = gs.from_torch(m)
    for name, p in model.params.items():
        np.testing.assert_array_equal(back.params[name], p)


def test_unsupported_modules_are_refused():
    with pytest.raises(ValueError, match="proj_size"):
        gs.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="LSTM, GRU or RNN"):
        gs.from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="reset_after"):
        gs.to_torch(gs.GRU(3, 4))
