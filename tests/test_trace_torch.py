"""gs.trace_torch on whole PyTorch models, float64: gates equal a recomputation from the
torch weights, states and dL/dh_t (dL/dc_t) equal torch autograd on an unrolled cell loop
(retain_grad on every step's state), within 1e-10; packed sequences; the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gatescope as gs

pytestmark = pytest.mark.torch

ATOL = 1e-10


def shake(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """float64, with weights large enough that every gate matters."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.5, 0.5)
    return module.eval()


class Tagger(torch.nn.Module):
    """Embedding -> recurrent stack -> Linear at every step (or on the last state)."""

    def __init__(self, rnn: torch.nn.Module, vocab: int = 11, tags: int = 5, last: bool = False):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, rnn.input_size)
        self.rnn = rnn
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        self.out = torch.nn.Linear(width, tags)
        self.last = last

    def forward(self, ids):
        x = self.emb(ids)
        if not self.rnn.batch_first:
            x = x.transpose(0, 1)
        y, state = self.rnn(x)
        if self.last:  # classify from the top layer's final h (the state output is used)
            h = state[0] if isinstance(state, tuple) else state
            return self.out(h[-1])
        return self.out(y if self.rnn.batch_first else y.transpose(0, 1))


def unrolled_lstm(m: torch.nn.LSTM, x: torch.Tensor):
    """PyTorch's LSTM as a step loop from its weights; every h_t and c_t keeps its grad."""
    B, T, _ = x.shape
    H = m.hidden_size
    inp, rec = x, []
    for k in range(m.num_layers):
        w_ih, w_hh = getattr(m, f"weight_ih_l{k}"), getattr(m, f"weight_hh_l{k}")
        b = getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}")
        h = c = torch.zeros(B, H, dtype=x.dtype)
        steps = []
        for t in range(T):
            a = inp[:, t] @ w_ih.T + h @ w_hh.T + b
            i, f, g, o = a.chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            h.retain_grad()
            c.retain_grad()
            steps.append({"i": i, "f": f, "g": g, "o": o, "c": c, "h": h})
        rec.append(steps)
        inp = torch.stack([s["h"] for s in steps], dim=1)
    h_n = torch.stack([steps[-1]["h"] for steps in rec])
    c_n = torch.stack([steps[-1]["c"] for steps in rec])
    return inp, (h_n, c_n), rec


def unrolled_gru_direction(m, k, suffix, inp, reverse):
    """One direction of PyTorch's GRU as a step loop; index t is real step t."""
    B, T, _ = inp.shape
    H = m.hidden_size
    w_ih, w_hh = getattr(m, f"weight_ih_l{k}{suffix}"), getattr(m, f"weight_hh_l{k}{suffix}")
    b_ih, b_hh = getattr(m, f"bias_ih_l{k}{suffix}"), getattr(m, f"bias_hh_l{k}{suffix}")
    h = torch.zeros(B, H, dtype=inp.dtype)
    steps = [None] * T
    for t in reversed(range(T)) if reverse else range(T):
        gi, gh = inp[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h = (1 - z) * n + z * h
        h.retain_grad()
        steps[t] = {"r": r, "z": z, "n": n, "h": h}
    return steps


def unrolled_bigru(m: torch.nn.GRU, x: torch.Tensor):
    inp, rec = x, []
    for k in range(m.num_layers):
        fwd = unrolled_gru_direction(m, k, "", inp, reverse=False)
        rev = unrolled_gru_direction(m, k, "_reverse", inp, reverse=True)
        rec.append((fwd, rev))
        inp = torch.cat([torch.stack([s["h"] for s in d], dim=1) for d in (fwd, rev)], dim=2)
    return inp, rec


def stacked(rec, name, grad=False):
    """Per-layer step records -> (L, B, T, H) numpy, values or their .grad."""
    return np.stack(
        [
            np.stack([(s[name].grad if grad else s[name]).detach().numpy() for s in steps], 1)
            for steps in rec
        ]
    )


@pytest.mark.parametrize("last", [False, True], ids=["tagger", "classifier"])
def test_embedding_two_layer_lstm_linear(last):
    model = shake(Tagger(torch.nn.LSTM(4, 5, num_layers=2, batch_first=True), last=last), 0)
    ids = torch.randint(0, 11, (3, 7), generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 5, (3,) if last else (3, 7))

    def loss_fn(logits):
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 5), target.reshape(-1))

    traced = gs.trace_torch(model, ids, loss_fn=loss_fn)
    assert set(traced) == {"rnn"}
    tt = traced["rnn"]
    assert isinstance(tt, gs.TorchTrace) and tt.module == "rnn" and tt.lengths is None

    # the same function, unrolled by hand from the torch weights
    y, (h_n, c_n), rec = unrolled_lstm(model.rnn, model.emb(ids))
    logits = model.out(h_n[-1]) if last else model.out(y)
    loss_fn(logits).backward()
    for name in "ifgoch":  # gates and states, every layer and step
        np.testing.assert_allclose(tt.trace[name], stacked(rec, name), rtol=0, atol=ATOL)
    np.testing.assert_allclose(tt.y, y.detach().numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(tt.state[0], h_n.detach().numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(tt.state[1], c_n.detach().numpy(), rtol=0, atol=ATOL)
    dh, dc = stacked(rec, "h", grad=True), stacked(rec, "c", grad=True)
    assert np.abs(dh).max() > 1e-3  # a gradient that is there to compare
    np.testing.assert_allclose(tt.dh, dh, rtol=0, atol=ATOL)
    np.testing.assert_allclose(tt.dc, dc, rtol=0, atol=ATOL)
    if last:  # only the final state feeds the loss: layer 1's first steps get little
        assert np.abs(tt.dh[1, :, -1]).max() > np.abs(tt.dh[1, :, 0]).max()


@pytest.mark.parametrize("num_layers", [1, 2])
def test_bidirectional_gru_tagger(num_layers):
    gru = torch.nn.GRU(4, 3, num_layers=num_layers, bidirectional=True, batch_first=False)
    model = shake(Tagger(gru), 2)
    ids = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(3))
    target = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(4))

    def loss_fn(logits):
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 5), target.reshape(-1))

    tt = gs.trace_torch(model, ids, loss_fn=loss_fn)["rnn"]
    y, rec = unrolled_bigru(model.rnn, model.emb(ids))
    loss_fn(model.out(y)).backward()
    H = 3
    for k, (fwd, rev) in enumerate(rec):
        for name in "rznh":
            got = tt.trace[name] if num_layers == 1 else tt.trace[name][k]  # (B, T, 2H)
            np.testing.assert_allclose(got[..., :H], stacked([fwd], name)[0], atol=ATOL)
            np.testing.assert_allclose(got[..., H:], stacked([rev], name)[0], atol=ATOL)
        dh = tt.dh if num_layers == 1 else tt.dh[k]
        np.testing.assert_allclose(dh[..., :H], stacked([fwd], "h", True)[0], rtol=0, atol=ATOL)
        np.testing.assert_allclose(dh[..., H:], stacked([rev], "h", True)[0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(tt.y, y.detach().numpy(), rtol=0, atol=ATOL)
    # final state, PyTorch's order (layer-major, direction-minor): reverse ends at step 0
    h_n = torch.stack([s for fwd, rev in rec for s in (fwd[-1]["h"], rev[0]["h"])])
    np.testing.assert_allclose(tt.state, h_n.detach().numpy(), rtol=0, atol=ATOL)
    assert tt.dc is None
    assert np.abs(tt.dh[..., H:]).max() > 1e-3


def test_initial_state_and_state_gradient():
    """hx passed to the module is replayed; dL/d(h_n) and dL/d(h0) come back too."""
    torch.manual_seed(5)
    rnn = shake(torch.nn.RNN(3, 4, batch_first=True), 5)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    h0 = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x, h0):
            y, h = self.rnn(x, h0)
            return (y**2).sum() + (h**3).sum()

    tt = gs.trace_torch(M(), x, h0, loss_fn=lambda out: out)["rnn"]
    loss = M()(x, h0)
    loss.backward()
    np.testing.assert_allclose(tt.state0, h0.detach().numpy()[0])
    np.testing.assert_allclose(tt.dstate0, h0.grad.numpy()[0], rtol=0, atol=ATOL)
    # dL/dh_T: its output term 2 y_T plus the state term 3 h_T^2
    yT = tt.y[:, -1]
    np.testing.assert_allclose(tt.dh[:, -1], 2 * yT + 3 * yT**2, rtol=0, atol=ATOL)


def test_packed_sequences_are_replayed_exactly():
    gru = shake(torch.nn.GRU(3, 4, bidirectional=True, batch_first=True), 6)
    lengths = torch.tensor([2, 5, 3])
    x = torch.randn(3, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    w = torch.randn(3, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(8))

    def run(x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        y, h = gru(packed)
        return pad_packed_sequence(y, batch_first=True, total_length=5)[0], h

    def loss_fn(out):
        y, h = out
        return (y * w).sum() + (h**2).sum()

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = gru

        def forward(self, x, lengths):
            return run(x, lengths)

    tt = gs.trace_torch(M(), x, lengths, loss_fn=loss_fn)["gru"]
    y, h = run(x, lengths)
    np.testing.assert_array_equal(tt.lengths, [2, 5, 3])
    for b, n in enumerate(lengths.tolist()):
        np.testing.assert_allclose(tt.y[b, :n], y[b, :n].detach().numpy(), rtol=0, atol=ATOL)
        assert np.isnan(tt.y[b, n:]).all() and np.isnan(tt.trace["z"][b, n:]).all()
        assert np.isnan(tt.dh[b, n:]).all()
        # each sequence alone, unpacked, is the same function: its dL/dh_t must match
        xb = x[b : b + 1, :n]
        alone = gs.trace_torch(
            gru, xb, loss_fn=lambda o, b=b, n=n: (o[0] * w[b : b + 1, :n]).sum() + (o[1] ** 2).sum()
        )[""]
        np.testing.assert_allclose(tt.dh[b, :n], alone.dh[0], rtol=0, atol=ATOL)
        np.testing.assert_allclose(tt.trace["r"][b, :n], alone.trace["r"][0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(tt.state, h.detach().numpy(), rtol=0, atol=ATOL)


def test_a_module_called_twice_gives_a_list_of_calls():
    lstm = shake(torch.nn.LSTM(3, 4, batch_first=True), 9)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = lstm
            self.head = torch.nn.Linear(4, 3)

        def forward(self, x):
            y, (h, c) = self.enc(x)
            y2, _ = self.enc(self.head(y), (h, c))  # the same weights, a second time
            return y2

    x = torch.randn(2, 4, 3, dtype=torch.float64)
    model = M().double()
    calls = gs.trace_torch(model, x, loss_fn=lambda y: y.sum())["enc"]
    assert isinstance(calls, list) and len(calls) == 2
    first, second = calls
    np.testing.assert_allclose(second.state0[0], first.state[0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(second.y, model(x).detach().numpy(), rtol=0, atol=ATOL)
    # the first call's dL/dy arrives through the second call: both are nonzero
    assert np.abs(first.dh).max() > 0 and np.abs(second.dh).max() > 0


def test_float32_models_and_no_loss():
    model = Tagger(torch.nn.GRU(4, 6, batch_first=True)).eval()
    ids = torch.randint(0, 11, (2, 5))
    tt = gs.trace_torch(model, ids)["rnn"]
    assert tt.dh is None and tt.y.dtype == np.float64
    with torch.no_grad():
        ref, _ = model.rnn(model.emb(ids))
    np.testing.assert_allclose(tt.y, ref.numpy(), rtol=0, atol=1e-5)
    tt32 = gs.trace_torch(model, ids, dtype=np.float32)["rnn"]
    assert tt32.y.dtype == np.float32


def test_refusals():
    with pytest.raises(ValueError, match="holds no torch.nn.LSTM"):
        gs.trace_torch(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        gs.trace_torch(gs.LSTM(2, 3), np.zeros((1, 2, 2)))
    lstm = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.9).double().train()
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        gs.trace_torch(lstm, torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="unbatched"):
        gs.trace_torch(torch.nn.GRU(3, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="proj_size"):
        gs.trace_torch(torch.nn.LSTM(3, 4, proj_size=2), torch.randn(5, 1, 3))
    with pytest.raises(ValueError, match="scalar"):
        gs.trace_torch(torch.nn.GRU(3, 4), torch.randn(5, 1, 3), loss_fn=lambda o: o[0])
