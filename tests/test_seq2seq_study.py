"""Connectivity of a Seq2Seq (gatescope.inspect.seq2seq): gradient checks and exact properties."""

from __future__ import annotations

import numpy as np
import pytest

from gatescope import inspect as gi
from gatescope.seq2seq import EOS, PAD, Seq2Seq

SRC_V, TGT_V = 9, 7


def _model(**cfg) -> Seq2Seq:
    return Seq2Seq(SRC_V, TGT_V, 3, seed=5, dtype="float64", embed_size=3, **cfg)


def _src_tgt():
    # row 0: distinct tokens (so an embedding row is one position's input); row 1: PAD tail
    src = np.array([[3, 4, 5, 6, 7, 8], [8, 3, 5, 4, PAD, PAD]])
    tgt = np.array([[3, 4, 5, 6, 4, EOS], [6, 5, EOS, PAD, PAD, PAD]])
    return src, tgt


@pytest.mark.parametrize(
    "cfg",
    [
        dict(attention="none"),
        dict(attention="bahdanau", reverse_source=True),
        dict(attention="luong", arch="gru", bidirectional=True),
        dict(attention="bahdanau", num_layers=2),
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_connectivity_matches_central_differences(cfg):
    model = _model(**cfg)
    src, tgt = _src_tgt()
    conn = gi.connectivity(model, src, tgt)
    assert conn.shape == (2, 6, 6)
    emb = model.params["src_embed"]
    eps = 1e-6
    # row 0 alone: token src[0, s] occurs only at position s, so its embedding row is e_s
    for t in (0, 3, 5):
        for s in (0, 2, 5):
            tok, y = src[0, s], tgt[0, t]
            grad = np.zeros(emb.shape[1])
            for e in range(emb.shape[1]):
                old = emb[tok, e]
                emb[tok, e] = old + eps
                up = model.forward(src[:1], tgt[:1])[0, t, y]
                emb[tok, e] = old - eps
                down = model.forward(src[:1], tgt[:1])[0, t, y]
                emb[tok, e] = old
                grad[e] = (up - down) / (2 * eps)
            assert conn[0, t, s] == pytest.approx(np.linalg.norm(grad), rel=1e-6, abs=1e-10)
            assert conn[0, t, s] > 0


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong"])
def test_pad_positions_and_pad_steps_are_exactly_zero(attention):
    model = _model(attention=attention)
    src, tgt = _src_tgt()
    conn = gi.connectivity(model, src, tgt)
    assert (conn[1, :, 4:] == 0).all()  # PAD source positions: no path at all
    assert (conn[1, 3:, :] == 0).all()  # PAD target steps: nothing is scored
    assert (conn[1, :3, :4] > 0).all() and (conn[0] > 0).all()


@pytest.mark.parametrize("attention", ["none", "bahdanau"])
def test_reverse_source_indexes_the_source_as_written(attention):
    # a reverse_source model on src computes what a plain model with the same weights
    # computes on src reversed within its length: the columns come back reversed
    rev = _model(attention=attention, reverse_source=True)
    plain = _model(attention=attention)
    plain.load_params(rev.params)
    src, tgt = _src_tgt()
    flipped = src.copy()
    flipped[0] = src[0, ::-1]
    flipped[1, :4] = src[1, 3::-1]
    a = gi.connectivity(rev, src, tgt)
    b = gi.connectivity(plain, flipped, tgt)
    np.testing.assert_allclose(a[0], b[0, :, ::-1], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(a[1, :, :4], b[1, :, 3::-1], rtol=1e-10, atol=1e-14)
    assert not np.allclose(a[0], b[0])  # the positions really are permuted


def _gradient_vectors(model, src, tgt):
    """d logit_t[y_t] / d e_s as vectors: (T, S * E) for the one example of src (1, S)."""
    T = tgt.shape[1]
    rows = []
    for t in range(T):
        model.forward(src, tgt)
        dlogits = np.zeros((1, T, TGT_V))
        dlogits[0, t, tgt[0, t]] = 1.0
        model.backward(dlogits)
        rows.append(model.d_source[0].ravel())
    return np.array(rows)


def test_without_attention_every_path_goes_through_the_final_state():
    # logit_t depends on the source only through the encoder's final (h, c): 2H = 4 numbers.
    # So the gradients of T = 9 logits with respect to all S * E = 18 source inputs form a
    # matrix of rank <= 4; with attention the memory opens other paths (full rank 9).
    src = np.array([[3, 4, 5, 6, 7, 8]])
    tgt = np.array([[3, 4, 5, 6, 4, 3, 5, 6, EOS]])
    H = 2
    ranks = {}
    for attention in ("none", "bahdanau"):
        model = Seq2Seq(SRC_V, TGT_V, H, seed=2, dtype="float64", embed_size=3, attention=attention)
        sv = np.linalg.svd(_gradient_vectors(model, src, tgt), compute_uv=False)
        ranks[attention] = int((sv > 1e-9 * sv[0]).sum())
    assert ranks["none"] <= 2 * H
    assert ranks["bahdanau"] > 2 * H


def test_connectivity_batches_and_chunks_like_single_examples():
    model = _model(attention="bahdanau", bidirectional=True)
    src, tgt = _src_tgt()
    full = gi.connectivity(model, src, tgt)
    chunked = gi.connectivity(model, src, tgt, max_rows=2)
    np.testing.assert_allclose(chunked, full, rtol=1e-12, atol=0)
    alone = gi.connectivity(model, src[1:, :4], tgt[1:, :3])
    np.testing.assert_allclose(alone[0], full[1, :3, :4], rtol=1e-10, atol=0)


def test_connectivity_of_the_decode_uses_the_emitted_tokens():
    model = _model(attention="luong")
    src, _ = _src_tgt()
    outs = model.translate(src, max_len=2 * src.shape[1] + 2)
    conn = gi.connectivity(model, src)
    for b, o in enumerate(outs):
        y = np.array([[*o, EOS]]) if len(o) < 2 * src.shape[1] + 2 else np.array([o])
        n = int((src[b] != PAD).sum())
        want = gi.connectivity(model, src[b : b + 1, :n], y)
        np.testing.assert_allclose(conn[b, : y.shape[1], :n], want[0], rtol=1e-10)
        assert (conn[b, y.shape[1] :] == 0).all()


def test_connectivity_leaves_grads_and_refuses_bad_input():
    model = _model(attention="none")
    src, tgt = _src_tgt()
    model.loss(src, tgt)
    model.backward()
    before = {k: g.copy() for k, g in model.grads.items()}
    gi.connectivity(model, src, tgt)
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, before[k])
    with pytest.raises(ValueError, match="model"):
        gi.connectivity(object(), src)
    with pytest.raises(ValueError, match="tgt"):
        gi.connectivity(model, src, tgt[:1])
    with pytest.raises(ValueError, match="max_rows"):
        gi.connectivity(model, src, tgt, max_rows=0)
