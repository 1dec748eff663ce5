"""gatescope.seq2seq: exact gradients, PyTorch parity, padding, decoding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gatescope.seq2seq import BOS, EOS, PAD, Seq2Seq

SRC_V, TGT_V = 8, 7


def _batch(rng: np.random.Generator, B: int = 3, S: int = 5, T: int = 4):
    """Ids with PAD tails of different lengths (row 0 the longest, as padding makes it)."""
    src = rng.integers(3, SRC_V, (B, S))
    src[1, 3:] = PAD
    src[2, 4:] = PAD
    tgt = rng.integers(3, TGT_V, (B, T))
    tgt[0, T - 1] = EOS
    tgt[1, 2], tgt[1, 3:] = EOS, PAD
    tgt[2, 1], tgt[2, 2:] = EOS, PAD
    return src, tgt


CONFIGS = [
    dict(attention="none"),
    dict(attention="none", arch="gru"),
    dict(attention="bahdanau"),
    dict(attention="bahdanau", arch="gru"),
    dict(attention="luong"),
    dict(attention="luong", arch="gru"),
    dict(attention="luong", score="dot"),
    dict(attention="none", num_layers=2),
    dict(attention="bahdanau", num_layers=2),
    dict(attention="luong", num_layers=2, arch="gru"),
    dict(attention="bahdanau", bidirectional=True),
    dict(attention="luong", bidirectional=True, num_layers=2),
    dict(attention="none", bidirectional=True, arch="gru"),
    dict(attention="bahdanau", bidirectional=True, num_layers=2, arch="gru"),
    dict(attention="bahdanau", reverse_source=True),
    dict(attention="luong", encoding="one_hot", reverse_source=True, bidirectional=True),
]


def _name(cfg: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in cfg.items())


@pytest.mark.parametrize("cfg", CONFIGS, ids=_name)
def test_gradients_match_central_differences(cfg):
    rng = np.random.default_rng(7)
    model = Seq2Seq(SRC_V, TGT_V, 4, seed=3, dtype="float64", embed_size=3, **cfg)
    src, tgt = _batch(rng)
    model.loss(src, tgt)
    model.backward()
    assert set(model.grads) == set(model.params)
    eps = 1e-6
    for name, p in model.params.items():
        g = model.grads[name]
        assert g.shape == p.shape
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            up = model.loss(src, tgt)
            p[idx] = old - eps
            down = model.loss(src, tgt)
            p[idx] = old
            num[idx] = (up - down) / (2 * eps)
        # central differences of a loss ~1 carry ~1e-10 of rounding
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8, err_msg=name)
        if "embed" not in name and name != "out.bias":
            assert np.abs(num).max() > 1e-9, f"{name} gets no gradient at all"


# ------------------------------------------------------------------------------ PyTorch


def _torch_twin(model: Seq2Seq):
    """The same model written in PyTorch (float64), weights copied from `model`: packed
    sequences for the encoder, nn.LSTM / nn.GRU or their cells for the decoder.

    Returns (loss_fn, named): loss_fn(src, tgt) -> torch loss; named: our parameter name ->
    (torch tensor, slice of it). PyTorch's second bias (bias_hh) stays 0 (its gradient is
    masked), except a GRU's n part, which is our bias_hn."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    c = model.config
    H, L = c.hidden_size, c.num_layers
    P = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.params.items()
    }
    named = {}  # our name -> (torch tensor, slice)

    def copy_layer(module, suffix, prefix, k):
        """Our layer k of `prefix` into the torch parameters ending in `suffix`."""

        def ours(n):
            return f"{prefix}.{n}_l{k}"

        w_ih, w_hh = getattr(module, "weight_ih" + suffix), getattr(module, "weight_hh" + suffix)
        b_ih, b_hh = getattr(module, "bias_ih" + suffix), getattr(module, "bias_hh" + suffix)
        keep = torch.zeros_like(b_hh)
        with torch.no_grad():
            w_ih.copy_(P[ours("weight_ih")])
            w_hh.copy_(P[ours("weight_hh")])
            b_ih.copy_(P[ours("bias")])  # PyTorch's two biases: ours in b_ih, b_hh zero
            b_hh.zero_()
            if c.arch == "gru":
                b_hh[2 * H :] = P[ours("bias_hn")]  # the bias inside the reset product
                keep[2 * H :] = 1
        b_hh.register_hook(lambda g: g * keep)
        named[ours("weight_ih")] = (w_ih, slice(None))
        named[ours("weight_hh")] = (w_hh, slice(None))
        named[ours("bias")] = (b_ih, slice(None))
        if c.arch == "gru":
            named[ours("bias_hn")] = (b_hh, slice(2 * H, None))

    Rec = nn.LSTM if c.arch == "lstm" else nn.GRU
    enc = Rec(model.embed_size("src"), H, L, batch_first=True, bidirectional=c.bidirectional)
    enc = enc.double()
    for k in range(L):
        copy_layer(enc, f"_l{k}", "enc", k)
        if c.bidirectional:
            copy_layer(enc, f"_l{k}_reverse", "enc_rev", k)
    E_t = model.embed_size("tgt")
    Dm = model.memory_size
    if c.attention == "bahdanau":
        Cell = nn.LSTMCell if c.arch == "lstm" else nn.GRUCell
        cells = [Cell((E_t + Dm) if k == 0 else H, H).double() for k in range(L)]
        for k, cell in enumerate(cells):
            copy_layer(cell, "", "dec", k)
    else:
        dec = Rec(E_t, H, L, batch_first=True).double()
        for k in range(L):
            copy_layer(dec, f"_l{k}", "dec", k)
    for name, t in P.items():
        if name not in named:
            named[name] = (t, slice(None))

    def embed(side, ids):
        if c.encoding == "one_hot":
            V = c.src_vocab if side == "src" else c.tgt_vocab
            return torch.nn.functional.one_hot(ids, V).double()
        return P[f"{side}_embed"][ids]

    def loss_fn(src, tgt):
        B, S = src.shape
        lengths = (src != PAD).sum(1)
        src_t = torch.tensor(src)
        if c.reverse_source:
            idx = np.tile(np.arange(S), (B, 1))
            for b in range(B):
                idx[b, : lengths[b]] = idx[b, : lengths[b]][::-1]
            src_t = src_t[torch.arange(B)[:, None], torch.tensor(idx)]
        packed = nn.utils.rnn.pack_padded_sequence(
            embed("src", src_t), torch.tensor(lengths), batch_first=True, enforce_sorted=False
        )
        out, hn = enc(packed)
        mem, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=S)
        if c.reverse_source:
            mem = mem[torch.arange(B)[:, None], torch.tensor(idx)]
        D = 2 if c.bidirectional else 1

        def finals(h):  # (L*D, B, H) -> (L, B, H), directions summed
            return h.view(L, D, B, H).sum(1)

        state = (finals(hn[0]), finals(hn[1])) if c.arch == "lstm" else finals(hn)
        smask = torch.tensor(src != PAD)
        y_in = torch.tensor(np.concatenate([np.full((B, 1), BOS), tgt[:, :-1]], axis=1))
        x = embed("tgt", y_in)  # (B, T, E)
        T = tgt.shape[1]

        def softmax_masked(score):
            return torch.softmax(score.masked_fill(~smask[:, None, :], -torch.inf), dim=-1)

        if c.attention == "bahdanau":
            if c.arch == "lstm":
                st = [(state[0][k], state[1][k]) for k in range(L)]
            else:
                st = [state[k] for k in range(L)]
            keys = mem @ P["attn.W_k"].T
            outs = []
            for t in range(T):
                q = st[-1][0] if c.arch == "lstm" else st[-1]
                score = torch.tanh(keys + (q @ P["attn.W_q"].T)[:, None, :]) @ P["attn.v"]
                alpha = softmax_masked(score[:, None, :])[:, 0]
                ctx = (alpha[:, :, None] * mem).sum(1)
                inp = torch.cat([x[:, t], ctx], dim=1)
                for k, cell in enumerate(cells):
                    st[k] = cell(inp, st[k])
                    inp = st[k][0] if c.arch == "lstm" else st[k]
                outs.append(torch.cat([inp, ctx], dim=1))
            O = torch.stack(outs, 1)
        else:
            Sd, _ = dec(x, state)
            if c.attention == "none":
                O = Sd
            else:
                Q = Sd @ P["attn.W_a"] if c.score == "general" else Sd
                alpha = softmax_masked(Q @ mem.transpose(1, 2))
                ctx = alpha @ mem
                O = torch.tanh(torch.cat([ctx, Sd], -1) @ P["attn.W_c"].T)
        logits = O @ P["out.weight"].T + P["out.bias"]
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, c.tgt_vocab), torch.tensor(tgt).reshape(-1), ignore_index=PAD
        )

    return loss_fn, named


def _torch_loss_and_grads(model: Seq2Seq, src: np.ndarray, tgt: np.ndarray):
    loss_fn, named = _torch_twin(model)
    loss = loss_fn(src, tgt)
    loss.backward()
    grads = {name: t.grad[part] for name, (t, part) in named.items() if t.grad is not None}
    return float(loss.detach()), grads


@pytest.mark.parametrize(
    "cfg",
    [
        dict(attention="none"),
        dict(attention="none", arch="gru", num_layers=2),
        dict(attention="bahdanau"),
        dict(attention="bahdanau", arch="gru", num_layers=2, bidirectional=True),
        dict(attention="bahdanau", num_layers=2, reverse_source=True),
        dict(attention="luong"),
        dict(attention="luong", score="dot", arch="gru"),
        dict(attention="luong", bidirectional=True, num_layers=2),
        dict(attention="luong", encoding="one_hot"),
    ],
    ids=_name,
)
def test_matches_pytorch(cfg):
    rng = np.random.default_rng(11)
    model = Seq2Seq(SRC_V, TGT_V, 6, seed=5, dtype="float64", embed_size=5, **cfg)
    src, tgt = _batch(rng, B=4, S=6, T=5)
    loss = model.loss(src, tgt)
    model.backward()
    want_loss, want = _torch_loss_and_grads(model, src, tgt)
    assert abs(loss - want_loss) < 1e-10
    assert set(want) >= set(model.grads)
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, want[name].numpy(), rtol=0, atol=1e-10, err_msg=name)


# ------------------------------------------------------------------------------ padding


@pytest.mark.parametrize(
    "cfg",
    [
        dict(attention="none"),
        dict(attention="bahdanau", bidirectional=True, num_layers=2),
        dict(attention="luong", arch="gru", reverse_source=True, bidirectional=True),
    ],
    ids=_name,
)
def test_padding_is_masked(cfg):
    """A sentence alone, or padded among longer ones, or with more PAD after it: the same
    logits, attention 0 on PAD, and no gradient into PAD steps' weights."""
    rng = np.random.default_rng(0)
    model = Seq2Seq(SRC_V, TGT_V, 5, seed=1, dtype="float64", **cfg)
    src, tgt = _batch(rng, B=3, S=6, T=4)
    alone = model.forward(src[1:2, :3], tgt[1:2]).copy()
    batched = model.forward(src, tgt)[1:2].copy()
    att = model.attention
    wider = np.concatenate([src, np.zeros((3, 4), np.int64)], axis=1)
    padded_more = model.forward(wider, tgt)[1:2]
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-12)
    np.testing.assert_allclose(padded_more, alone, rtol=0, atol=1e-12)
    if att is not None:
        assert att.shape == (3, 4, 6)
        assert np.all(att[1, :, 3:] == 0) and np.all(att[2, :, 4:] == 0)
        np.testing.assert_allclose(att.sum(-1), 1.0, rtol=0, atol=1e-12)
        assert np.all(model.attention[:, :, 6:] == 0)
    # the loss skips PAD targets: changing what follows EOS changes nothing
    loss = model.loss(src, tgt)
    tgt2 = tgt.copy()
    tgt2[2, 2:] = PAD  # already PAD; change a PAD *input* position's target to PAD too
    assert model.loss(src, tgt2) == loss


def test_loss_is_mean_over_real_tokens():
    rng = np.random.default_rng(2)
    model = Seq2Seq(SRC_V, TGT_V, 4, seed=0, dtype="float64", attention="luong")
    src, tgt = _batch(rng)
    loss = model.loss(src, tgt)
    logits = model.logits
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
    real = tgt != PAD
    assert abs(loss + picked[real].mean()) < 1e-12


# ------------------------------------------------------------------------------ decoding


def _trained_ish(attention: str, seed: int = 0) -> Seq2Seq:
    """A random model with large output weights, so its distributions are far from uniform."""
    model = Seq2Seq(SRC_V, 6, 5, seed=seed, dtype="float64", attention=attention)
    model.params["out.weight"] *= 6.0
    return model


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong"])
def test_greedy_is_what_teacher_forcing_predicts(attention):
    """Feeding the greedy output back as the target, the forward logits pick it again."""
    rng = np.random.default_rng(3)
    model = _trained_ish(attention)
    src, _ = _batch(rng, B=4, S=6)
    outs = model.translate(src, max_len=6)
    att = model.attention
    for b, out in enumerate(outs):
        tgt = np.array([[*out, EOS]]) if len(out) < 6 else np.array([out])
        logits = model.forward(src[b : b + 1], tgt)
        logits[..., : BOS + 1] = -np.inf
        np.testing.assert_array_equal(np.argmax(logits[0], -1), tgt[0])
        if att is not None:  # the greedy decode's attention = the forward's
            np.testing.assert_allclose(
                model.attention[0], att[b, : tgt.shape[1]], rtol=0, atol=1e-12
            )


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong"])
def test_beam_one_is_greedy(attention):
    rng = np.random.default_rng(4)
    model = _trained_ish(attention, seed=2)
    src, _ = _batch(rng, B=4, S=6)
    assert model.translate(src, beam=1) == [
        model.translate(src[b : b + 1], beam=1)[0] for b in range(4)
    ]
    assert (
        model.translate(src, beam=1, max_len=7)
        == [
            model._beam_one(  # the beam search itself, with one hypothesis kept
                {"memory": e["memory"][b : b + 1], "smask": e["smask"][b : b + 1]},
                [tuple(a[b : b + 1] for a in s) for s in e["finals"]],
                None if k is None else k[b : b + 1],
                1,
                7,
            )
            for b in range(4)
            for _, e, k in [model._start(src)]
        ]
    )


def test_beam_search_finds_the_most_likely_output():
    """With a beam as wide as the whole search space, beam search returns the exact argmax
    over every output of up to max_len tokens, and beats greedy on this constructed case."""
    max_len, V = 3, 6  # tokens 3, 4, 5 and EOS
    found_better = False
    for seed in range(12):
        model = _trained_ish("bahdanau", seed=seed)
        model.params["out.weight"] *= 0.3  # flatter: greedy is often not the best
        src = np.array([[3, 4, 5, 6, 0]])
        hyps = [
            list(seq)
            for n in range(max_len + 1)
            for seq in itertools.product(range(3, V), repeat=n)
        ]
        scores = [model.sequence_logprob(src, h, max_len=max_len) for h in hyps]
        best = hyps[int(np.argmax(scores))]
        beam = model.translate(src, beam=len(hyps), max_len=max_len)[0]
        assert beam == best
        greedy = model.translate(src, beam=1, max_len=max_len)[0]
        score = model.sequence_logprob(src, greedy, max_len=max_len)
        assert score <= max(scores) + 1e-12
        if score < max(scores) - 1e-6:  # greedy missed it; the full beam did not
            found_better = True
            assert beam != greedy
    assert found_better, "no seed where greedy misses the most likely output"


# ------------------------------------------------------------------------------ trace, API


def test_trace_holds_every_gate_and_obeys_the_cell_equations():
    rng = np.random.default_rng(5)
    model = Seq2Seq(SRC_V, TGT_V, 4, num_layers=2, bidirectional=True, dtype="float64")
    src, tgt = _batch(rng, B=3, S=5, T=4)
    model.loss(src, tgt)
    tr = model.trace
    assert set(tr) == {"encoder", "encoder_reverse", "decoder", "attention"}
    for part, S in (("encoder", 5), ("encoder_reverse", 5), ("decoder", 4)):
        assert set(tr[part]) == {"i", "f", "g", "o", "c", "h"}
        assert tr[part]["c"].shape == (2, 3, S, 4)
        i, f, g, o, c, h = (tr[part][k] for k in "ifgoch")
        real = (src != PAD)[None, :, :, None] if part != "decoder" else np.ones((1, 3, 4, 1), bool)
        real = np.broadcast_to(real, c.shape)
        # the cell equations at every real step; PAD steps keep the last real state
        np.testing.assert_allclose(h[real], (o * np.tanh(c))[real], rtol=1e-12)
        c_next = f[:, :, 1:] * c[:, :, :-1] + i[:, :, 1:] * g[:, :, 1:]
        r1 = real[:, :, 1:]
        np.testing.assert_allclose(c[:, :, 1:][r1], c_next[r1], rtol=1e-12)
        if part != "decoder":  # row 1 has 3 real tokens: steps 3 and 4 keep step 2's state
            np.testing.assert_array_equal(c[:, 1, 3:], np.repeat(c[:, 1, 2:3], 2, axis=1))
            np.testing.assert_array_equal(h[:, 1, 3:], np.repeat(h[:, 1, 2:3], 2, axis=1))
    np.testing.assert_array_equal(tr["attention"], model.attention)
    gru = Seq2Seq(SRC_V, TGT_V, 4, arch="gru", attention="none", dtype="float64")
    gru.loss(src, tgt)
    assert set(gru.trace["decoder"]) == {"r", "z", "n", "h"}


def test_bad_inputs_raise_value_errors_naming_the_argument():
    model = Seq2Seq(SRC_V, TGT_V, 4)
    src = np.array([[3, 4, 0]])
    with pytest.raises(ValueError, match="src"):
        model.loss(np.array([[3, 99]]), np.array([[3, 2]]))
    with pytest.raises(ValueError, match="src"):
        model.loss(np.array([[0, 0]]), np.array([[3, 2]]))
    with pytest.raises(ValueError, match="tgt"):
        model.loss(src, np.array([[3.0, 2.0]]))
    with pytest.raises(ValueError, match="attention"):
        Seq2Seq(SRC_V, TGT_V, 4, attention="dotty")
    with pytest.raises(ValueError, match="arch"):
        Seq2Seq(SRC_V, TGT_V, 4, arch="rnn")
    with pytest.raises(ValueError, match="score"):
        Seq2Seq(SRC_V, TGT_V, 4, attention="luong", score="dot", bidirectional=True)
    with pytest.raises(ValueError, match="beam"):
        model.translate(src, beam=0)
    with pytest.raises(RuntimeError, match="before"):
        Seq2Seq(SRC_V, TGT_V, 4).backward()


def test_save_and_read_back(tmp_path):
    from gatescope.model import read_model_file, save_model

    model = Seq2Seq(SRC_V, TGT_V, 4, attention="luong", bidirectional=True, seed=3)
    path = tmp_path / "m.safetensors"
    save_model(path, model, {"note": "x"})
    back, meta, _ = read_model_file(path)
    assert isinstance(back, Seq2Seq) and meta["type"] == "gatescope.Seq2Seq"
    assert back.config == model.config
    src, tgt = _batch(np.random.default_rng(0))
    assert back.loss(src, tgt) == model.loss(src, tgt)


@pytest.mark.parametrize(
    "cfg",
    [
        dict(attention="bahdanau"),
        dict(attention="luong", arch="gru", bidirectional=True),
        dict(attention="none", num_layers=2),
    ],
    ids=_name,
)
def test_trains_like_pytorch(cfg):
    """100 steps of Adam with gradient clipping on the same batches (the loop's own
    train_step against torch.optim.Adam): float64 weights within 1e-9."""
    torch = pytest.importorskip("torch")
    from gatescope.tasks.seq2seq import ReverseTask
    from gatescope.train import TrainConfig, train_step

    task = ReverseTask(length=6, min_length=2, symbols=4)
    model = Seq2Seq(task.input_size, task.output_size, 6, seed=0, dtype="float64", **cfg)
    loss_fn, named = _torch_twin(model)
    tensors = list({id(t): t for t, _ in named.values()}.values())
    opt_t = torch.optim.Adam(tensors, lr=1e-2)
    config = TrainConfig(lr=1e-2, clip_norm=1.0)
    opt = config.make_optimizer(model.params)
    rng = np.random.default_rng(0)
    for _ in range(100):
        batch = task.make_batch(8, rng)
        loss, bad = train_step(model, opt, batch, config)
        assert bad is None
        opt_t.zero_grad()
        loss_t = loss_fn(batch.x, batch.y)
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(tensors, 1.0)
        opt_t.step()
        assert abs(loss - float(loss_t.detach())) < 1e-9
    for name, p in model.params.items():
        t, part = named[name]
        np.testing.assert_allclose(p, t.detach()[part].numpy(), rtol=0, atol=1e-9, err_msg=name)
