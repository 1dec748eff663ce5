"""Interventions on the sequence-to-sequence model (`gi.intervene(seq2seq, (src, tgt), edits)`):
the edited teacher-forced forward on encoder, decoder and attention weights, its exact backward
(central differences in float64 for each kind of edit, LSTM and GRU, with and without
attention, 1 and 2 layers), the properties that hold exactly, and the errors of a bad edit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import central_difference, rel_error

import gatescope as gs
from gatescope import inspect as gi
from gatescope.seq2seq import EOS, PAD, Seq2Seq

SRC_V, TGT_V, H, S, T = 8, 7, 3, 5, 4
KINDS = ("value", "scale", "add", "source")
CONFIGS = [
    dict(arch="lstm", attention="none"),
    dict(arch="gru", attention="none", num_layers=2),
    dict(arch="lstm", attention="bahdanau"),
    dict(arch="gru", attention="bahdanau", num_layers=2),
    dict(arch="lstm", attention="luong", num_layers=2),
    dict(arch="gru", attention="luong"),
    dict(arch="lstm", attention="bahdanau", bidirectional=True),
    dict(arch="lstm", attention="none", num_layers=2, reverse_source=True),
]


def _name(cfg: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in cfg.items())


def _batch(rng: np.random.Generator, B: int = 3):
    """Ids with PAD tails: row 1 has 3 real source tokens, row 2 has 4."""
    src = rng.integers(3, SRC_V, (B, S))
    src[1, 3:] = PAD
    src[2, 4:] = PAD
    tgt = rng.integers(3, TGT_V, (B, T))
    tgt[1, 2], tgt[1, 3:] = EOS, PAD
    return src, tgt


def _model(cfg: dict, seed: int = 3) -> Seq2Seq:
    return Seq2Seq(SRC_V, TGT_V, H, seed=seed, dtype="float64", embed_size=3, **cfg)


def _names(model: Seq2Seq) -> tuple[str, ...]:
    return ("i", "f", "g", "o", "c", "h") if model.config.arch == "lstm" else ("r", "z", "n", "h")


def _value(kind: str, rng: np.random.Generator, shape: tuple[int, ...]) -> dict:
    """One kind of edit of 2 steps x 2 units (source: an array of the run's full shape)."""
    if kind == "value":
        return {"value": 0.3}
    if kind == "scale":
        return {"scale": rng.uniform(0.5, 1.5, size=2)}
    if kind == "add":
        return {"add": rng.normal(scale=0.3, size=(1, 2, 2))}
    return {"source": rng.normal(scale=0.5, size=shape)}


def _edits(model: Seq2Seq, kind: str, rng: np.random.Generator) -> list[gi.Edit]:
    """One edit of `kind` per quantity of the encoder and of the decoder, spread over steps
    (PAD steps included) and layers; the attention weights at two target steps, on a real
    source position and one that is PAD in row 1; the reverse encoder when bidirectional."""
    c = model.config
    L, B = c.num_layers, 3
    out = []
    parts = [("encoder", S), ("decoder", T)]
    if c.bidirectional:
        parts.append(("encoder_reverse", S))
    for part, n in parts:
        for j, q in enumerate(_names(model)):
            where = {"steps": [j % n, (j + 3) % n], "units": [0, 2], "layer": j % L}
            out.append(gi.Edit(q, part=part, **where, **_value(kind, rng, (B, n, H))))
    if c.attention != "none":
        out.append(gi.Edit("attention", steps=[1, 2], units=[0, 3], **_value(kind, rng, (B, T, S))))
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_name)
def test_edited_gradients_match_central_differences(cfg, kind):
    """backward after an intervened forward is the gradient of the edited function."""
    rng = np.random.default_rng(11)
    model = _model(cfg)
    src, tgt = _batch(rng)
    edits = _edits(model, kind, rng)
    dlogits = rng.normal(size=(3, T, TGT_V))

    def loss() -> float:
        return float((gi.intervene(model, (src, tgt), edits) * dlogits).sum())

    loss()
    model.backward(dlogits)
    analytic = {k: v.copy() for k, v in model.grads.items()}
    for name, p in model.params.items():
        err = rel_error(central_difference(loss, p), analytic[name])
        assert err < 1e-6, (name, err)


def test_the_edits_change_the_gradient():
    """Against the unedited model's gradient: the edited backward is another function's."""
    rng = np.random.default_rng(12)
    model = _model(dict(arch="lstm", attention="bahdanau"))
    src, tgt = _batch(rng)
    dlogits = rng.normal(size=(3, T, TGT_V))
    model.forward(src, tgt)
    model.backward(dlogits)
    plain = {k: v.copy() for k, v in model.grads.items()}
    gi.intervene(model, (src, tgt), _edits(model, "value", rng))
    model.backward(dlogits)
    assert rel_error(model.grads["enc.weight_hh_l0"], plain["enc.weight_hh_l0"]) > 1e-3
    assert rel_error(model.grads["attn.v"], plain["attn.v"]) > 1e-3


def test_a_set_final_state_passes_no_gradient_to_the_encoder():
    """Without attention the decoder reads only the encoder's final state: with c and h of
    every layer set at the last source step, no gradient reaches the encoder or the source."""
    rng = np.random.default_rng(13)
    model = _model(dict(arch="lstm", attention="none", num_layers=2))
    src, tgt = _batch(rng)
    edits = [gi.Edit(q, part="encoder", steps=-1, layer=k, value=0.1) for q in "ch" for k in (0, 1)]
    gi.intervene(model, (src, tgt), edits)
    model.backward(rng.normal(size=(3, T, TGT_V)))
    for name, g in model.grads.items():
        if name.startswith(("enc.", "src_embed")):
            assert np.all(g == 0), name
        elif name.startswith("dec.weight"):
            assert np.any(g != 0), name


# ------------------------------------------------------------------------------ exactly


@pytest.mark.parametrize("cfg", CONFIGS, ids=_name)
def test_scale_one_and_no_edit_change_nothing_bit_for_bit(cfg):
    rng = np.random.default_rng(14)
    model = _model(cfg)
    src, tgt = _batch(rng)
    ref = model.forward(src, tgt)
    trace = model.trace
    np.testing.assert_array_equal(gi.intervene(model, (src, tgt), []), ref)
    edits = [
        gi.Edit(q, part=part, layer=k, scale=1.0)
        for part in ("encoder", "decoder")
        + (("encoder_reverse",) if cfg.get("bidirectional") else ())
        for q in _names(model)
        for k in range(model.num_layers)
    ]
    if model.config.attention != "none":
        edits.append(gi.Edit("attention", scale=1.0))
    np.testing.assert_array_equal(gi.intervene(model, (src, tgt), edits), ref)
    for part, arrays in model.trace.items():
        if part == "attention":
            np.testing.assert_array_equal(arrays, trace[part]) if arrays is not None else None
            continue
        for q, a in arrays.items():
            np.testing.assert_array_equal(a, trace[part][q], err_msg=f"{part} {q}")
    # and the plans are gone afterwards: a plain forward is the plain forward
    np.testing.assert_array_equal(model.forward(src, tgt), ref)


@pytest.mark.parametrize(
    "cfg",
    [
        dict(arch="lstm", attention="none", num_layers=2),
        dict(arch="gru", attention="none"),
        dict(arch="lstm", attention="none", bidirectional=True),
        dict(arch="gru", attention="none", num_layers=2, reverse_source=True),
        dict(arch="lstm", attention="bahdanau", num_layers=2),
        dict(arch="gru", attention="luong"),
    ],
    ids=_name,
)
def test_patching_the_final_encoder_state_gives_the_clean_decoder_outputs(cfg):
    """Clean and corrupted sources (the same lengths, other tokens). Patching every encoder c
    and h at the last source step (a PAD step for the shorter rows: the state kept) from the
    clean run gives the clean run's logits, exactly, when the decoder reads only that state
    (attention="none"); with attention the memory is read too, so the top layer's h at every
    step is patched as well."""
    rng = np.random.default_rng(15)
    model = _model(cfg)
    clean, tgt = _batch(rng)
    corrupt = np.where(clean != PAD, rng.integers(3, SRC_V, clean.shape), PAD)
    ref = gi.intervene(model, (clean, tgt), [])
    trace = model.trace
    bad = gi.intervene(model, (corrupt, tgt), [])
    assert not np.allclose(bad, ref)
    L = model.num_layers
    parts = ("encoder", "encoder_reverse") if cfg.get("bidirectional") else ("encoder",)
    states = ("h", "c") if model.config.arch == "lstm" else ("h",)
    edits = [
        gi.Edit(q, part=part, steps=-1, layer=k, source=trace)
        for part in parts
        for q in states
        for k in range(L)
    ]
    if model.config.attention != "none":  # the memory: the top layer's h, every other step
        edits += [
            gi.Edit("h", part=part, steps=slice(0, S - 1), layer=L - 1, source=trace)
            for part in parts
        ]
    out = gi.intervene(model, (corrupt, tgt), edits)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_one_hot_attention_makes_the_context_that_memory_row(arch, attention):
    rng = np.random.default_rng(16)
    model = _model(dict(arch=arch, attention=attention, num_layers=2))
    src, tgt = _batch(rng)
    j = 2
    gi.intervene(model, (src, tgt), [gi.Edit("attention", steps=[0, 2], value=np.eye(S)[j])])
    ctx = model._ctx
    memory = ctx["enc"]["memory"]  # (B, S, Dm)
    alpha = model.trace["attention"]
    np.testing.assert_array_equal(alpha[:, [0, 2]], np.broadcast_to(np.eye(S)[j], (3, 2, S)))
    for t in (0, 2):
        context = ctx["O"][:, t, H:] if attention == "bahdanau" else ctx["cat"][:, t, :H]
        np.testing.assert_array_equal(context, memory[:, j])
    assert not np.allclose(alpha[:, 1].max(axis=1), 1.0)  # unedited rows: softmax as computed


def test_edited_attention_rows_are_not_renormalised():
    rng = np.random.default_rng(17)
    model = _model(dict(arch="lstm", attention="luong"))
    src, tgt = _batch(rng)
    gi.intervene(model, (src, tgt), [gi.Edit("attention", steps=1, scale=2.0)])
    sums = model.trace["attention"].sum(axis=2)  # (B, T)
    np.testing.assert_allclose(sums[:, 1], 2.0, rtol=1e-12)
    np.testing.assert_allclose(sums[:, [0, 2, 3]], 1.0, rtol=1e-12)


def test_trace_holds_the_edited_values_and_the_edit_propagates():
    """f = 0 at a decoder step gives c = i * g there; every later logit moves, no earlier."""
    rng = np.random.default_rng(18)
    model = _model(dict(arch="lstm", attention="bahdanau"))
    src, tgt = _batch(rng)
    ref = gi.intervene(model, (src, tgt), [])
    out = gi.intervene(model, (src, tgt), [gi.Edit("f", part="decoder", steps=2, value=0.0)])
    tr = model.trace["decoder"]
    assert np.all(tr["f"][0, :, 2] == 0)
    np.testing.assert_array_equal(tr["c"][0, :, 2], tr["i"][0, :, 2] * tr["g"][0, :, 2])
    np.testing.assert_array_equal(out[:, :2], ref[:, :2])
    assert np.all(np.abs(out[:, 2:] - ref[:, 2:]).max(axis=(0, 2)) > 0)
    # an encoder h edit at a PAD step changes the state kept (row 1 is PAD from step 3)
    gi.intervene(model, (src, tgt), [gi.Edit("h", part="encoder", steps=3, units=0, value=0.7)])
    enc = model.trace["encoder"]["h"][0]  # (B, S, H)
    assert np.all(enc[:, 3, 0] == 0.7) and enc[1, 4, 0] == 0.7  # kept on at step 4


# ------------------------------------------------------------------------------ bad edits


@pytest.mark.parametrize(
    "cfg, edits, match",
    [
        (
            dict(arch="gru"),
            [gi.Edit("c", part="encoder", value=0.0)],
            "GRU encoder has no quantity 'c'",
        ),
        (dict(), [gi.Edit("c", value=0.0)], "needs part="),
        (dict(), [gi.Edit("c", part="encoders", value=0.0)], "part must be one of"),
        (dict(), [gi.Edit("c", part="encoder_reverse", value=0.0)], "not bidirectional"),
        (dict(), [gi.Edit("c", part="encoder", steps=S, value=0.0)], f"steps {S} out of range"),
        (dict(), [gi.Edit("c", part="decoder", steps=T, value=0.0)], f"steps {T} out of range"),
        (dict(), [gi.Edit("h", part="decoder", units=H, value=0.0)], f"units {H} out of range"),
        (dict(), [gi.Edit("h", part="decoder", layer=1, value=0.0)], "layer 1 out of range"),
        (dict(), [gi.Edit("attention", units=S, value=0.0)], f"source positions {S} out of range"),
        (dict(), [gi.Edit("attention", steps=T, value=0.0)], f"steps {T} out of range"),
        (dict(), [gi.Edit("attention", layer=1, value=0.0)], "layer 1 out of range"),
        (dict(), [gi.Edit("c", part="attention", value=0.0)], "one quantity, 'attention'"),
        (dict(attention="none"), [gi.Edit("attention", value=0.0)], "has no attention"),
        (
            dict(),
            [gi.Edit("c", part="encoder", source=np.zeros((3, S + 1, H)))],
            rf"must be \(3, {S}, {H}\)",
        ),
        (
            dict(),
            [gi.Edit("attention", source=np.zeros((3, T, S - 1)))],
            rf"must be \(3, {T}, {S}\) \(batch, target steps, source positions\)",
        ),
        (dict(), [gi.Edit("c", part="decoder", source={"h": np.zeros((3, T, H))})], "no 'c'"),
        (
            dict(),
            [
                gi.Edit("h", part="decoder", steps=1, value=0.0),
                gi.Edit("h", part="decoder", scale=2.0),
            ],
            "edits 0 and 1 both change decoder 'h'",
        ),
        (dict(), [gi.Edit("h", part="decoder", value=np.zeros(2))], "does not broadcast"),
        (dict(), [gi.Edit("h", part="decoder")], "exactly one of"),
    ],
)
def test_bad_edits_raise_before_anything_runs(cfg, edits, match):
    model = _model(dict(arch="lstm", attention="bahdanau") | cfg)
    src, tgt = _batch(np.random.default_rng(19))
    with pytest.raises(ValueError, match=match):
        gi.intervene(model, (src, tgt), edits)
    assert model.trace == {} and model._ctx is None  # nothing ran


def test_bad_inputs_name_the_argument():
    model = _model(dict(arch="lstm", attention="bahdanau"))
    src, tgt = _batch(np.random.default_rng(20))
    with pytest.raises(ValueError, match=r"x must be the pair \(src, tgt\)"):
        gi.intervene(model, src, [])
    with pytest.raises(ValueError, match="src"):
        gi.intervene(model, (src.astype(float), tgt), [])
    with pytest.raises(ValueError, match="tgt must have 3 rows"):
        gi.intervene(model, (src, tgt[:2]), [])
    with pytest.raises(ValueError, match="state0"):
        gi.intervene(model, (src, tgt), [], state0=np.zeros((3, H)))
    with pytest.raises(ValueError, match="part= names a part of a Seq2Seq"):
        gi.intervene(gs.LSTM(2, 3), np.zeros((1, 4, 2)), [gi.Edit("c", part="encoder", value=0)])
    assert model._ctx is None
