"""Interventions (`gatescope.inspect.intervene`): the edited forward, its exact backward
(central differences in float64 for each kind of edit, architecture and variant, 1 and 2
layers), the properties that must hold exactly, and the errors of a bad edit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CONFIGS, central_difference, config_id, flat, make, random_state, rel_error

import gatescope as gs
from gatescope import inspect as gi
from gatescope.inspect.interventions import compile_edits, run_edited
from gatescope.model import SequenceModel
from gatescope.nn.edits import EditPlan
from gatescope.nn.lstm_variants import VARIANTS

TOL = 1e-6
VARIANT_CONFIGS = [("lstm", {"variant": v}) for v in VARIANTS if v != "vanilla"]
ALL_CONFIGS = CONFIGS + VARIANT_CONFIGS
KINDS = ("value", "scale", "add", "source")


def _edits(layer, kind: str, T: int, rng) -> list[gi.Edit]:
    """One edit of `kind` per quantity of the architecture, spread over steps and layers."""
    L, H = layer.num_layers, layer.hidden_size
    out = []
    for j, q in enumerate(layer.trace_names):
        where = {"steps": [j % T, (j + 2) % T], "units": [0, 2], "layer": j % L}
        if kind == "value":
            out.append(gi.Edit(q, value=0.3, **where))
        elif kind == "scale":
            out.append(gi.Edit(q, scale=rng.uniform(0.5, 1.5, size=2), **where))
        elif kind == "add":
            out.append(gi.Edit(q, add=rng.normal(scale=0.3, size=(1, 2, 2)), **where))
        else:
            out.append(gi.Edit(q, source=rng.normal(scale=0.5, size=(2, T, H)), **where))
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_edited_gradients(config, num_layers, kind):
    """backward after an intervened forward is the gradient of the edited function."""
    arch, opts = config
    rng = np.random.default_rng(7)
    B, T, D, H = 2, 4, 2, 3
    layer = make(arch, D, H, num_layers, seed=3, **opts)
    for p in layer.params.values():
        p += rng.normal(scale=0.1, size=p.shape)
    x = rng.normal(size=(B, T, D))
    state0 = random_state(layer, B, rng)
    dy = rng.normal(size=(B, T, H))
    dstate = random_state(layer, B, rng)
    edits = _edits(layer, kind, T, rng)

    def loss() -> float:
        y, state = gi.intervene(layer, x, edits, state0)
        return float((y * dy).sum() + sum((s * d).sum() for s, d in zip(flat(state), flat(dstate))))

    loss()
    dx = layer.backward(dy, dstate)
    analytic = {n: g.copy() for n, g in layer.grads.items()}
    dstate0 = [d.copy() for d in flat(layer.dstate0)]
    for name, p in layer.params.items():
        err = rel_error(central_difference(loss, p), analytic[name])
        assert err < TOL, (name, err)
    assert rel_error(central_difference(loss, x), dx) < TOL, "x"
    for name, s, ds in zip("hc", flat(state0), dstate0):
        assert rel_error(central_difference(loss, s), ds) < TOL, f"state0 {name}"


def test_a_set_entry_passes_no_gradient_to_what_computed_it():
    """With every h at the last step set, dy there reaches nothing before it."""
    rng = np.random.default_rng(0)
    layer = gs.LSTM(3, 4, seed=0)
    x = rng.normal(size=(2, 5, 3))
    gi.intervene(layer, x, [gi.Edit("h", steps=4, value=0.0), gi.Edit("c", steps=4, value=0.0)])
    dy = np.zeros((2, 5, 4))
    dy[:, 4] = 1.0
    dx = layer.backward(dy)
    assert np.all(dx == 0) and all(np.all(g == 0) for g in layer.grads.values())


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=config_id)
def test_scale_one_and_no_edit_change_nothing_bit_for_bit(config, monkeypatch):
    arch, opts = config
    rng = np.random.default_rng(1)
    layer = make(arch, 3, 5, 2, seed=1, **opts)
    x = rng.normal(size=(3, 6, 3))
    monkeypatch.setenv("GATESCOPE_BACKEND", "numpy")  # the reference, as an edited run uses
    y_ref, s_ref = layer(x)
    trace_ref = {k: v.copy() for k, v in layer.trace.items()}
    y0, s0 = gi.intervene(layer, x, [])
    np.testing.assert_array_equal(y0, y_ref)
    edits = [gi.Edit(q, scale=1.0, layer=k) for q in layer.trace_names for k in (0, 1)]
    y1, s1 = gi.intervene(layer, x, edits)
    np.testing.assert_array_equal(y1, y_ref)
    for a, b in zip(flat(s1), flat(s_ref)):
        np.testing.assert_array_equal(a, b)
    for k, v in layer.trace.items():
        np.testing.assert_array_equal(v, trace_ref[k])


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_patching_every_state_at_step_t_gives_the_clean_run_from_t_on(arch, num_layers):
    """Recall-like pair: the same noise, another symbol at step 0. Patching the state (c and
    h for an LSTM, h otherwise) of every unit and layer at step t from the clean run into
    the corrupted one gives the clean outputs from step t on, exactly."""
    rng = np.random.default_rng(2)
    layer = make(arch, 4, 6, num_layers, seed=2)
    clean = rng.normal(size=(3, 9, 4))
    corrupt = clean.copy()
    corrupt[:, 0] = rng.normal(size=(3, 4))
    y_clean, _ = gi.intervene(layer, clean, [])
    trace = {k: v.copy() for k, v in layer.trace.items()}
    y_corrupt, _ = gi.intervene(layer, corrupt, [])
    for t in (0, 3, 8):
        edits = [
            gi.Edit(q, steps=t, layer=k, source=trace)
            for q in layer.state_names
            for k in range(num_layers)
        ]
        y, _ = gi.intervene(layer, corrupt, edits)
        np.testing.assert_array_equal(y[:, t:], y_clean[:, t:])
        np.testing.assert_array_equal(y[:, :t], y_corrupt[:, :t])
        assert not np.array_equal(y_corrupt[:, t:], y_clean[:, t:])  # the patch did something


@pytest.mark.parametrize("variant", VARIANTS)
def test_forget_gate_zero_gives_c_equal_i_times_g(variant):
    rng = np.random.default_rng(3)
    layer = gs.LSTM(3, 5, variant=variant, seed=3)
    x = rng.normal(size=(2, 7, 3))
    gi.intervene(layer, x, [gi.Edit("f", steps=[4], value=0.0)])
    tr = layer.trace
    assert np.all(tr["f"][:, 4] == 0)
    np.testing.assert_array_equal(tr["c"][:, 4], tr["i"][:, 4] * tr["g"][:, 4])
    assert not np.array_equal(tr["c"][:, 3], 0 * tr["c"][:, 3])  # there was a c_{t-1} to drop


def test_edit_propagates_and_trace_holds_the_edited_values():
    rng = np.random.default_rng(4)
    layer = gs.LSTM(3, 5, seed=4)
    x = rng.normal(size=(2, 6, 3))
    y0, _ = gi.intervene(layer, x, [])
    y, _ = gi.intervene(layer, x, [gi.Edit("c", steps=2, units=[1, 3], value=2.0)])
    tr = layer.trace
    assert np.all(tr["c"][:, 2, [1, 3]] == 2.0)
    np.testing.assert_array_equal(tr["h"][:, 2], tr["o"][:, 2] * np.tanh(tr["c"][:, 2]))
    np.testing.assert_array_equal(y[:, :2], y0[:, :2])
    assert np.all(np.abs(y[:, 2:] - y0[:, 2:]).max(axis=(0, 2)) > 0)  # every later step moved


def test_steps_units_as_int_list_slice_and_negative():
    layer = gs.GRU(2, 6, seed=0)
    x = np.random.default_rng(5).normal(size=(1, 8, 2))
    gi.intervene(layer, x, [gi.Edit("z", steps=slice(2, 8, 3), units=slice(None, 3), value=1.0)])
    z = layer.trace["z"][0]
    assert np.all(z[[2, 5], :3] == 1.0) and not np.any(z[[0, 1, 3, 4, 6, 7], :3] == 1.0)
    gi.intervene(layer, x, [gi.Edit("n", steps=-1, units=-1, value=0.5)])
    assert layer.trace["n"][0, 7, 5] == 0.5


def test_watch_plan_records_the_gradient_of_each_quantity():
    """A plan of watch entries (mul = add = None) changes nothing and records dL/dq_t, which
    equals the central difference of an add= edit at that entry."""
    rng = np.random.default_rng(6)
    layer = gs.LSTM(3, 4, 2, seed=6)
    x = rng.normal(size=(2, 5, 3))
    dy = rng.normal(size=(2, 5, 4))
    t, u = 2, 1
    for layer_index in (0, 1):
        for q in layer.trace_names:
            plan = EditPlan({(t, q): (None, None)}, keep_grads=True)
            plans = [None, None]
            plans[layer_index] = plan
            run_edited(layer, x, plans)
            layer.backward(dy)
            analytic = plan.grads[(t, q)][:, u]  # (B,)
            for b in range(2):
                add = np.zeros((2, 1, 1))

                def loss(add=add, q=q, k=layer_index):
                    y, _ = gi.intervene(layer, x, [gi.Edit(q, steps=t, units=u, layer=k, add=add)])
                    return float((y * dy).sum())

                fd = central_difference(loss, add)
                assert abs(fd[b, 0, 0] - analytic[b]) < 1e-6 * (1 + abs(analytic[b])), (q, b)


# ----------------------------------------------------------------------------- models


def test_intervene_on_a_sequence_model_routes_to_its_stack():
    rng = np.random.default_rng(7)
    model = SequenceModel.build("lstm", 4, 6, 3, "classify_last", num_layers=2, seed=0)
    x = rng.normal(size=(2, 5, 4))
    out_ref = model.forward(x)
    out0 = gi.intervene(model, x, [])
    np.testing.assert_allclose(out0, out_ref, rtol=1e-12, atol=1e-12)
    # the top layer's last h set to 0: the head sees 0 and returns its bias
    out = gi.intervene(model, x, [gi.Edit("h", steps=-1, layer=1, value=0.0)])
    np.testing.assert_array_equal(out, np.broadcast_to(model.head.params["bias"], out.shape))
    # and the model's backward differentiates the edited model
    edits = [gi.Edit("f", steps=[1, 3], units=[0, 4], scale=0.5), gi.Edit("c", steps=2, add=0.1)]
    dout = rng.normal(size=(2, 3))

    def loss() -> float:
        return float((gi.intervene(model, x, edits) * dout).sum())

    loss()
    model.backward(dout)
    grads = {k: v.copy() for k, v in model.grads.items()}
    for name in ("rnn.weight_hh_l0", "rnn.bias_l1", "head.weight"):
        assert rel_error(central_difference(loss, model.params[name]), grads[name]) < TOL, name


def test_intervene_on_a_char_model_with_int_ids():
    """A one-hot classify_steps model takes (B, T) ids; the edits reach its stack."""
    model = SequenceModel.build("gru", 5, 4, 5, "classify_steps", encoding="one_hot", seed=1)
    ids = np.array([[0, 1, 2, 3, 4, 0]])
    out0 = gi.intervene(model, ids, [])
    out = gi.intervene(model, ids, [gi.Edit("h", steps=3, value=0.0)])
    np.testing.assert_array_equal(out[:, :3], out0[:, :3])
    np.testing.assert_array_equal(out[:, 3], np.broadcast_to(model.head.params["bias"], (1, 5)))
    assert np.all(model.recurrent.trace["h"][:, 3] == 0)


# ----------------------------------------------------------------------------- bad edits


@pytest.mark.parametrize(
    "edits, match",
    [
        ([gi.Edit("c", value=0.0)], "GRU has no quantity 'c'"),
        ([gi.Edit("h", steps=[9], value=0.0)], "steps 9 out of range"),
        ([gi.Edit("h", steps=-10, value=0.0)], "steps -10 out of range"),
        ([gi.Edit("z", units=[0, 4], value=0.0)], "units 4 out of range"),
        ([gi.Edit("h", layer=2, value=0.0)], "layer 2 out of range"),
        ([gi.Edit("h", source=np.zeros((2, 9, 4)))], r"must be \(2, 8, 4\)"),
        ([gi.Edit("h", source={"c": np.zeros((2, 8, 4))})], "source has no 'h'"),
        ([gi.Edit("h", value=np.zeros(3))], "does not broadcast"),
        ([gi.Edit("h")], "exactly one of"),
        ([gi.Edit("h", value=0.0, scale=2.0)], "exactly one of"),
        ([gi.Edit("h", value=np.nan)], "must be finite"),
        (
            [
                gi.Edit("r", steps=[1, 2], units=[0, 1], value=0.0),
                gi.Edit("r", steps=2, units=1, scale=2.0),
            ],
            "edits 0 and 1 both change 'r'",
        ),  # fmt: skip
        ([gi.Edit("h", steps=[1, 1], value=0.0)], "repeats"),
        ([gi.Edit("h", steps=slice(5, 2), value=0.0)], "selects nothing"),
    ],
)
def test_bad_edits_raise_before_anything_runs(edits, match):
    layer = gs.GRU(3, 4, 2, seed=0)
    x = np.zeros((2, 8, 3))
    with pytest.raises(ValueError, match=match):
        gi.intervene(layer, x, edits)
    assert layer.trace == {}  # nothing ran


def test_not_a_layer_or_model():
    with pytest.raises(ValueError, match="layer_or_model"):
        gi.intervene(object(), np.zeros((1, 2, 3)), [])


def test_compile_edits_builds_only_what_is_needed():
    layer = gs.LSTM(2, 3, seed=0)
    (plan,) = compile_edits(layer, [gi.Edit("o", steps=1, units=[2], scale=2.0)], 4, 5)
    mul, add = plan.entries[(1, "o")]
    assert add is None and mul.shape == (4, 3)
    np.testing.assert_array_equal(mul, np.tile([1.0, 1.0, 2.0], (4, 1)))
    assert set(plan.entries) == {(1, "o")}
