"""Activation patching, attribution patching, clamped gates and unit ablations
(`gatescope.inspect.patching`), on a trained recall LSTM (tests/data/patching, written by
scripts/make_patching_fixture.py) and on small models built or trained here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gatescope import inspect as gi
from gatescope.inspect import patching as P
from gatescope.inspect.units import pearson_columns
from gatescope.model import SequenceModel, load_model
from gatescope.optim import Adam
from gatescope.tasks.recall import RecallTask

FIXTURE = Path(__file__).parent / "data" / "patching" / "recall_lstm_T20_H16.safetensors"


@pytest.fixture(scope="module")
def recall():
    """The trained recall LSTM (T = 20, H = 16) and 32 pairs: the same noise, another symbol."""
    model, meta = load_model(FIXTURE)
    task = RecallTask(**{k: v for k, v in meta["task"].items() if k != "name"})
    batch = task.make_batch(32, 1)
    other = (batch.y + 1 + np.random.default_rng(0).integers(0, 7, 32)) % 8  # != batch.y
    corrupted = batch.x.copy()
    corrupted[:, 0] = np.eye(8)[other]
    return model, batch, corrupted


def test_coarse_map_shows_the_symbol_in_the_cell_state(recall):
    """Patching all of c at any step brings the clean answer back; i, f and o carry nothing
    of it; g carries it only while it is written (the first steps); h at the start and the
    last step (the head reads h_T) only."""
    model, batch, corrupted = recall
    cm = P.coarse_map(model, batch.x, corrupted)
    R = dict(zip(cm.labels, cm.recovered.T))  # quantity -> (T,)
    assert cm.recovered.shape == (20, 6)
    assert np.all(R["c"] > 0.9)
    for q in ("i", "f", "o"):
        assert np.all(np.abs(R[q][:-2]) < 0.05), q
    assert R["g"][0] > 0.9 and np.all(np.abs(R["g"][8:]) < 0.05)
    assert R["h"][0] > 0.6 and R["h"][-1] > 0.99 and np.all(np.abs(R["h"][6:-3]) < 0.1)


def test_patching_map_of_c_shows_the_symbol_handed_on_and_spread_over_units(recall):
    """One unit's c carries a part of the symbol. At step 0 a few units hold it (the best
    alone brings back > 20 %); over the next steps it is handed on to other units, which
    hold it to the end, 4-15 % each, the parts adding up to about all of it by the last
    steps. No single unit brings it all back. The forget gate carries none of it."""
    model, batch, corrupted = recall
    pm = P.patching_map(model, batch.x, corrupted, "c")
    R = pm.recovered
    assert R.shape == (20, 16) and pm.method == "patching"
    holders = np.argsort(-R[-1])[:3]  # who holds it at the end
    assert np.all(R[-5:, holders] > 0.04)
    assert R[0].max() > 0.2 and np.argmax(R[0]) not in holders  # handed on
    assert R.max() < 0.4
    total = R.sum(axis=1)  # (T,)
    assert np.all((total[14:19] > 0.8) & (total[14:19] < 1.2))
    pf = P.patching_map(model, batch.x, corrupted, "f")
    assert np.abs(pf.recovered).max() < 0.05


def test_patching_map_equals_patching_one_entry_at_a_time(recall):
    """The batched map (suffix runs from the corrupted state, chunks of rows) equals full
    runs with one gi.Edit(source=clean trace) each."""
    model, batch, corrupted = recall
    clean, corr = batch.x[:6], corrupted[:6]
    pm = P.patching_map(model, clean, corr, "h", max_rows=7)  # chunks that cut across steps
    out_c = gi.intervene(model, clean, [])
    trace = {k: v.copy() for k, v in model.recurrent.trace.items()}
    out_k = gi.intervene(model, corr, [])
    d = np.zeros(out_c.shape)
    d[np.arange(6), out_c.argmax(1)] += 1
    d[np.arange(6), out_k.argmax(1)] -= 1
    m_c, m_k = (out_c * d).sum(1).mean(), (out_k * d).sum(1).mean()
    assert pm.clean == pytest.approx(m_c) and pm.corrupted == pytest.approx(m_k)
    for t, u in [(0, 0), (5, 3), (19, 15), (11, 7)]:
        out = gi.intervene(model, corr, [gi.Edit("h", steps=t, units=u, source=trace)])
        want = ((out * d).sum(1).mean() - m_k) / (m_c - m_k)
        assert pm.recovered[t, u] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_attribution_map_is_the_first_order_patching_map():
    """For a corrupted input a tiny step away from the clean one, attribution patching (one
    backward pass) equals real patching to first order, entry by entry."""
    rng = np.random.default_rng(0)
    model = SequenceModel.build("lstm", 3, 5, 4, "classify_last", num_layers=2, seed=1)
    clean = rng.normal(size=(4, 7, 3))
    corrupted = clean.copy()
    corrupted[:, 0] += 1e-5 * rng.normal(size=(4, 3))
    direction = np.array([1.0, -1.0, 0.5, 0.0])
    for q, layer in (("c", 0), ("f", 1), ("h", 1)):
        pm = P.patching_map(model, clean, corrupted, q, layer=layer, direction=direction)
        am = P.attribution_map(model, clean, corrupted, q, layer=layer, direction=direction)
        assert am.method == "attribution"
        np.testing.assert_allclose(am.recovered, pm.recovered, atol=1e-3)
        assert P.correlation(am, pm) > 0.999


def test_attribution_on_the_trained_model_is_a_rough_guide(recall):
    """On the trained model the first-order estimate is poor for single units of c (the
    effects are far from linear); it is reported, not trusted: its correlation with the
    real map is a number in [-1, 1] and the coarse totals agree in sign at the end."""
    model, batch, corrupted = recall
    am = P.attribution_map(model, batch.x, corrupted, "c")
    pm = P.patching_map(model, batch.x, corrupted, "c")
    r = P.correlation(am, pm)
    assert -1 <= r <= 1
    assert am.recovered[-1].sum() > 0 and pm.recovered[-1].sum() > 0


def test_clamp_curves_on_recall(recall):
    """f held at 1 keeps the symbol from any step; f at 0 loses it unless clamped at the very
    end; closing the input gate before the symbol is written in loses it, after keeps it."""
    model, batch, _ = recall
    curves = P.clamp_curve(model, batch.x, batch.y)
    assert list(curves) == ["k", "f=1", "f=0", "i=0"]
    assert np.all(curves["f=1"] > 0.9)
    assert curves["f=0"][0] < 0.4 and curves["f=0"][-1] > 0.9
    assert curves["i=0"][0] < 0.3 and np.all(curves["i=0"][10:] > 0.95)
    assert np.all(np.diff(curves["i=0"][:8]) >= -0.1)  # later closing, more kept


# ----------------------------------------------------------------------------- units

VOCAB = "()a"


def _bracket_text(rng, n: int, T: int) -> np.ndarray:
    """(n, T + 1) ids of random bracket strings: ')' only where a bracket is open, depth <= 4."""
    ids = np.empty((n, T + 1), dtype=np.int64)
    for b in range(n):
        depth = 0
        for t in range(T + 1):
            if depth == 0:
                c = "(" if rng.random() < 0.3 else "a"
            elif depth == 4:
                c = ")" if rng.random() < 0.5 else "a"
            else:
                c = rng.choice(list("()a"), p=[0.25, 0.35, 0.4])
            depth += {"(": 1, ")": -1, "a": 0}[c]
            ids[b, t] = VOCAB.index(c)
    return ids


def _depth(ids: np.ndarray) -> np.ndarray:
    """Bracket depth after reading each character, (n, T)."""
    return np.cumsum(np.where(ids == 0, 1, np.where(ids == 1, -1, 0)), axis=1)


@pytest.fixture(scope="module")
def bracket_lm():
    """A small char LM (one-hot inputs, classify_steps) trained here on bracket strings."""
    rng = np.random.default_rng(0)
    model = SequenceModel.build("lstm", 3, 8, 3, "classify_steps", seed=0)
    opt = Adam(model.params, lr=0.02)
    eye = np.eye(3)
    for _ in range(250):
        ids = _bracket_text(rng, 32, 30)
        out = model.forward(eye[ids[:, :-1]])  # (B, T, V)
        z = out - out.max(-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        dout = p - eye[ids[:, 1:]]  # d cross-entropy / d logits
        model.backward(dout / dout.shape[0] / dout.shape[1])
        opt.step(model.grads)
    ids = _bracket_text(np.random.default_rng(1), 64, 30)
    return model, eye[ids[:, :-1]], ids[:, 1:], _depth(ids[:, :-1])


def test_unit_ablation_of_the_bracket_depth_unit(bracket_lm):
    """The unit whose c follows the depth best (|r| > 0.9) matters: mean-ablated, the model
    is less sure a ')' comes, more than most random units. Not more than every one: in this
    small LM several units carry the depth (many have |r| > 0.8), and one of them matters
    as much, so `matters` (beats every random unit) is not asserted."""
    model, x, targets, depth = bracket_lm
    gi.intervene(model, x, [])
    c = model.recurrent.trace["c"].reshape(-1, 8)
    r = pearson_columns(c, depth.ravel().astype(float))
    unit = int(np.argmax(np.abs(r)))
    assert abs(r[unit]) > 0.9  # a depth unit exists
    res = P.unit_ablation(model, x, targets, classes=[VOCAB.index(")")], unit=unit, n_random=7)
    assert res.delta < -0.03  # without it the model is less sure a ')' comes
    assert res.percentile > 0.5
    assert set(res.random_units) == set(range(8)) - {unit}
    assert 0 < res.base < 1


def test_a_unit_that_correlates_but_does_not_matter_is_reported_as_such(bracket_lm):
    """A twin of the depth unit (same incoming weights, so the same c at every step, hence
    the same correlation) whose outgoing weights are zero: ablating it changes nothing."""
    model, x, targets, depth = bracket_lm
    gi.intervene(model, x, [])
    r = pearson_columns(model.recurrent.trace["c"].reshape(-1, 8), depth.ravel().astype(float))
    unit = int(np.argmax(np.abs(r)))
    twin_unit = (unit + 1) % 8
    twin = SequenceModel(model.config)
    twin.load_params(model.params)
    rec, H = twin.recurrent.params, 8
    for g in range(4):  # unit twin_unit's gate rows read what unit's rows read
        rows_u, rows_t = g * H + unit, g * H + twin_unit
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_l0"):
            rec[name][rows_t] = rec[name][rows_u]
    rec["weight_hh_l0"][:, twin_unit] = 0  # nothing reads the twin's h ...
    twin.head.params["weight"][:, twin_unit] = 0  # ... not even the head
    gi.intervene(twin, x, [])
    c = twin.recurrent.trace["c"]
    np.testing.assert_array_equal(c[..., twin_unit], c[..., unit])
    r_twin = pearson_columns(c.reshape(-1, 8), depth.ravel().astype(float))
    assert abs(r_twin[twin_unit]) > 0.7
    res = P.unit_ablation(twin, x, targets, classes=[VOCAB.index(")")], unit=twin_unit)
    assert res.delta == 0.0 and not res.matters
    zero = P.unit_ablation(twin, x, targets, classes=[VOCAB.index(")")], unit=unit, mode="zero")
    assert zero.delta < 0


# ----------------------------------------------------------------------------- errors


def test_bad_arguments(recall):
    model, batch, corrupted = recall
    with pytest.raises(ValueError, match="quantity must be one of"):
        P.patching_map(model, batch.x, corrupted, "z")
    with pytest.raises(ValueError, match="layer 1 out of range"):
        P.coarse_map(model, batch.x, corrupted, layer=1)
    with pytest.raises(ValueError, match="one shape"):
        P.patching_map(model, batch.x, corrupted[:3])
    with pytest.raises(ValueError, match="nothing to recover"):
        P.patching_map(model, batch.x, batch.x)
    with pytest.raises(ValueError, match="classify_steps"):
        P.unit_ablation(model, batch.x, np.zeros((32, 20), int), classes=[0], unit=0)
    with pytest.raises(ValueError, match="mode must be"):
        P.unit_ablation(model, batch.x, np.zeros((32, 20), int), classes=[0], unit=0, mode="x")


# ----------------------------------------------------------------------------- figures, CLI


def test_figures_draw_the_maps(recall):
    from gatescope.viz import patching as V

    model, batch, corrupted = recall
    clean, corr = batch.x[:8], corrupted[:8]
    pm = P.patching_map(model, clean, corr, "c")
    am = P.attribution_map(model, clean, corr, "c")
    fig = V.patching_map_figure(pm, top=3)
    (ax,) = [a for a in fig.axes if a.get_label() == "patching:c"]
    np.testing.assert_array_equal(ax.images[0].get_array(), pm.recovered.T)
    peak = np.unravel_index(np.argmax(pm.recovered), pm.recovered.shape)[1]
    ticks = {int(t.get_text()) for t in ax.get_yticklabels()}
    assert ticks == {int(u) for u in pm.top_units(3)} | {int(peak)}
    cm = P.coarse_map(model, clean, corr)
    (ax,) = [a for a in V.coarse_map_figure(cm).axes if a.get_label() == "coarse"]
    np.testing.assert_array_equal(ax.images[0].get_array(), cm.recovered.T)
    (ax,) = [
        a for a in V.attribution_figure(pm, am).axes if a.get_label() == "attribution_vs_patching"
    ]
    np.testing.assert_array_equal(ax.collections[0].get_offsets()[:, 1], am.recovered.ravel())
    curves = P.clamp_curve(model, clean, batch.y[:8], ks=[0, 10, 19])
    (ax,) = [a for a in V.clamp_figure(curves).axes if a.get_label() == "clamp"]
    assert [line.get_label() for line in ax.lines] == ["f=1", "f=0", "i=0"]
    np.testing.assert_array_equal(ax.lines[2].get_ydata(), curves["i=0"])


def test_recall_pairs_differ_in_the_symbol_only():
    task = RecallTask(length=12)
    clean, corrupted, y = P.recall_pairs(task, 50, seed=3)
    np.testing.assert_array_equal(clean[:, 1:], corrupted[:, 1:])
    assert np.all(clean[:, 0].argmax(1) == y) and np.all(corrupted[:, 0].argmax(1) != y)
    with pytest.raises(ValueError, match="recall task"):
        P.recall_pairs(object(), 5)


def test_cli_patch_writes_maps_and_numbers(run_cli, tmp_path):
    import json

    out = tmp_path / "patch"
    res = run_cli("patch", FIXTURE, "--out", out, "--pairs", "8", "--clamp-batch", "32")
    assert res.code == 0, res.err
    names = {p.name for p in out.iterdir()}
    assert names == {
        "patching_coarse.png", "patching_c.png", "patching_h.png",
        "patching_attribution.png", "patching_clamp.png", "patching.json",
    }  # fmt: skip
    report = json.loads((out / "patching.json").read_text())
    assert np.all(np.array(report["coarse"]["c"]) > 0.9)
    assert np.array(report["maps"]["c"]).shape == (20, 16)
    assert set(report["clamp"]) == {"k", "f=1", "f=0", "i=0"}
    assert -1 <= report["attribution"]["correlation_with_patching"] <= 1
    assert "top units" in res.out


def test_cli_patch_refuses_what_it_cannot_read(run_cli, tmp_path):
    from gatescope.model import save_model

    res = run_cli("patch", tmp_path / "missing.safetensors", "--out", tmp_path)
    assert res.code == 2 and "no such file" in res.err and "Traceback" not in res.err
    model = SequenceModel.build("lstm", 2, 3, 1, "regress_last")
    path = tmp_path / "adding.safetensors"
    save_model(path, model, {"task": {"name": "adding", "length": 5}})
    res = run_cli("patch", path, "--out", tmp_path)
    assert res.code == 2 and "recall models" in res.err


# ----------------------------------------------------------------------------- char-LM units


def test_feature_table_gives_the_characters_each_feature_predicts():
    """Every feature `gatescope cells` correlates has its characters; the ids are the
    vocabulary's own, and characters a vocabulary lacks are left out."""
    from gatescope.inspect.units import FEATURE_NAMES
    from gatescope.tasks.text import Vocab

    assert set(P.FEATURE_CHARS) == set(FEATURE_NAMES)
    vocab = Vocab("\n \"'()[]a{}")
    ids = P.feature_classes(vocab, "bracket_depth")
    assert vocab.decode(ids) == ")]}"
    assert set(vocab.decode(P.feature_classes(vocab, "in_string"))) == {"'", '"'}
    assert vocab.decode(P.feature_classes(vocab, "line_position")) == "\n"
    small = Vocab("()a")
    assert small.decode(P.feature_classes(small, "bracket_depth")) == ")"
    with pytest.raises(ValueError, match="feature must be one of"):
        P.feature_classes(vocab, "nesting")
    with pytest.raises(ValueError, match="none of"):
        P.feature_classes(Vocab("ab"), "bracket_depth")


def test_text_rows_pair_each_character_with_the_next():
    ids = np.arange(23)
    x, targets = P.text_rows(ids, 5)
    assert x.shape == targets.shape == (4, 5)
    np.testing.assert_array_equal(targets, x + 1)
    np.testing.assert_array_equal(x.ravel(), ids[:20])
    with pytest.raises(ValueError, match="more than 5"):
        P.text_rows(ids[:5], 5)


def _tiny_charlm():
    from gatescope import charlm as cl
    from gatescope.tasks.text import Vocab

    vocab = Vocab("\n ()+ab")
    model = cl.new_model(vocab.size, hidden_size=6, num_layers=2, dtype="float64", seed=3)
    text = "(a + (b + a)) + b\n" * 3 + "((a) + (b))\nab (b)\n"
    x, targets = P.text_rows(vocab.encode(text), 12)
    return model, vocab, x, targets


def test_ablating_a_unit_nothing_reads_changes_nothing_exactly():
    """In a 2-layer char LM, a unit of the top layer whose h nothing reads (its recurrent
    column and the head's column are zero) has a mean-ablation delta of exactly 0, and so
    has its zero-ablation, while an ordinary unit changes p(')'); chunking the ablations
    (max_rows) changes no number."""
    model, vocab, x, targets = _tiny_charlm()
    classes = P.feature_classes(vocab, "bracket_depth")
    u = 2
    model.recurrent.params["weight_hh_l1"][:, u] = 0
    model.head.params["weight"][:, u] = 0
    for mode in ("mean", "zero"):
        res = P.unit_ablation(model, x, targets, classes, u, layer=1, mode=mode, n_random=5)
        assert res.delta == 0.0 and not res.matters and res.beaten_by == 5
        assert res.count == int(np.isin(targets, classes).sum())
    res = P.unit_ablation(model, x, targets, classes, 0, layer=0, n_random=5)
    assert res.delta != 0.0
    chunked = P.unit_ablation(model, x, targets, classes, 0, layer=0, n_random=5, max_rows=4)
    assert chunked.base == pytest.approx(res.base, rel=1e-12)
    np.testing.assert_allclose(chunked.random_deltas, res.random_deltas, rtol=1e-9, atol=1e-15)
    assert chunked.delta == pytest.approx(res.delta, rel=1e-9)


def test_where_restricts_the_measurement():
    """`where` keeps only the steps it marks: base is the mean p(target) over them."""
    model, vocab, x, targets = _tiny_charlm()
    classes = P.feature_classes(vocab, "bracket_depth")
    where = np.zeros(targets.shape, bool)
    where[:, 6:] = True
    res = P.unit_ablation(model, x, targets, classes, 1, n_random=2, where=where)
    out = gi.intervene(model, x, [])
    z = out - out.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    pt = np.take_along_axis(p, targets[..., None], -1)[..., 0]
    mask = np.isin(targets, classes) & where
    assert res.count == mask.sum() and res.base == pytest.approx(pt[mask].mean(), rel=1e-12)
    with pytest.raises(ValueError, match="where must have the shape"):
        P.unit_ablation(model, x, targets, classes, 1, where=where[:, :3])


@pytest.mark.slow  # the pretrained 2 x 256 LSTM over 3,000 characters, 4 ablations
def test_cli_patch_unit_of_the_pretrained_model(run_cli, tmp_path):
    """`gatescope patch --pretrained --feature bracket_depth --unit 0:80`: the JSON's numbers
    are unit_ablation's on the same rows, and the verdict says whether the unit matters."""
    import json

    from gatescope import pretrained
    from gatescope.inspect import units as U

    text = Path(U.__file__).read_text()[:3000]  # gatescope's source: not in the training set
    src = tmp_path / "held.py"
    src.write_text(text)
    res = run_cli(
        "patch", "--pretrained", "--feature", "bracket_depth", "--unit", "0:80",
        "--text", src, "--random", "3", "--seq-len", "100", "--json", "--out", tmp_path / "o",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(res.out)
    (row,) = report["units"]
    assert (row["layer"], row["unit"], row["state"]) == (0, 80, "c")
    assert report["characters"] == ")]}"
    model, vocab, _ = pretrained.load()
    x, targets = P.text_rows(vocab.encode(text), 100)
    on = U.text_features(text)["bracket_depth"][: x.size].reshape(x.shape) > 0
    want = P.unit_ablation(
        model, x, targets, P.feature_classes(vocab, "bracket_depth"), 80, n_random=3, where=on
    )
    assert row["delta"] == pytest.approx(want.delta, rel=1e-9)
    assert row["random"]["units"] == want.random_units.tolist()
    assert row["matters"] == want.matters
    assert row["verdict"].startswith("L0 c[80]")
    assert ("matters:" in row["verdict"]) == want.matters
    assert {p.name for p in (tmp_path / "o").iterdir()} == {
        "ablation_bracket_depth.png", "ablation_bracket_depth.json",
    }  # fmt: skip


def test_cli_patch_unit_errors(run_cli, tmp_path):
    """Out-of-range units, unknown features, a model that is not a char LM, a bad LAYER:UNIT:
    exit 2, one line, no traceback."""
    src = tmp_path / "t.py"
    src.write_text("f(a, [b])\n" * 50)
    cases = [
        (("--pretrained", "--feature", "bracket_depth", "--unit", "0:999", "--text", src),
         "out of range"),
        (("--pretrained", "--feature", "bracket_depth", "--unit", "2:0", "--text", src),
         "out of range"),
        (("--pretrained", "--feature", "nesting", "--text", src), "invalid choice"),
        (("--pretrained", "--feature", "bracket_depth", "--unit", "0-80"), "LAYER:UNIT"),
        ((FIXTURE, "--feature", "bracket_depth"), "character LM"),
        (("--pretrained", "--text", src), "give --feature"),
        ((FIXTURE,), "give --out"),
    ]  # fmt: skip
    for argv, message in cases:
        res = run_cli("patch", *argv)
        assert res.code == 2, (argv, res.err)
        assert message in res.err and "Traceback" not in res.err, (argv, res.err)


def test_ablation_figure_draws_each_unit_against_its_random_units():
    from gatescope.viz import patching as V

    model, vocab, x, targets = _tiny_charlm()
    classes = P.feature_classes(vocab, "bracket_depth")
    results = [P.unit_ablation(model, x, targets, classes, u, layer=1, n_random=3) for u in (0, 4)]
    (ax,) = [a for a in V.ablation_figure(results).axes if a.get_label() == "ablation"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L1 c[0] (mean)", "L1 c[4] (mean)"]
    grey, unit0 = ax.collections[0], ax.collections[1]
    np.testing.assert_array_equal(grey.get_offsets()[:, 0], results[0].random_deltas)
    assert unit0.get_offsets()[0, 0] == results[0].delta
