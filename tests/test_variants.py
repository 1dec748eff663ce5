"""LSTM variants (issue 10): exact gradients, the equations, the trace, parameter counts,
configuration round trips, and the default variant left alone (PyTorch's LSTM, fast path)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_gradients_match, random_state

import gatescope as gs
from gatescope.checkpoint import load_checkpoint, save_checkpoint
from gatescope.nn import RecurrentConfig, build_recurrent
from gatescope.nn import lstm_variants as lv
from gatescope.nn.lstm import lstm_backward, lstm_forward

VARIANTS = lv.VARIANTS
TOL = 1e-6


def sig(z):
    return 1 / (1 + np.exp(-z))


def ln(z, eps=lv.LN_EPS):
    return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + eps)


def reference_step(variant, p, x, h_prev, c_prev):
    """One step of `variant`, written from the equations with no shared code: -> i f g o c h."""
    H = h_prev.shape[1]
    blocks = {"cifg": "fgo", "nfg": "igo", "nig": "fgo", "nog": "ifg"}.get(variant, "ifgo")
    u, v = x @ p["weight_ih"].T, h_prev @ p["weight_hh"].T
    if variant == "layernorm":
        u, v = ln(u) * p["ln_gain_ih"], ln(v) * p["ln_gain_hh"]
    a = u + v + p.get("bias", 0)
    a = {n: a[:, k * H : (k + 1) * H] for k, n in enumerate(blocks)}
    pi, pf, po = np.split(p.get("peephole", np.zeros(3 * H)), 3)
    f = sig(a["f"] + pf * c_prev) if "f" in a else np.ones_like(c_prev)
    i = sig(a["i"] + pi * c_prev) if "i" in a else (1 - f if variant == "cifg" else 1 + 0 * f)
    g = np.tanh(a["g"])
    c = f * c_prev + i * g
    o = sig(a["o"] + po * c) if "o" in a else np.ones_like(c)
    if variant == "layernorm":
        s = np.tanh(ln(c) * p["ln_gain_c"] + p.get("ln_bias_c", 0))
    elif variant == "noaf":
        s = c
    else:
        s = np.tanh(c)
    return i, f, g, o, c, o * s


def perturbed(layer, rng, scale=0.3):
    """Move every parameter off its initial value (peepholes 0, gains 1, biases 0)."""
    for p in layer.params.values():
        p += rng.normal(scale=scale, size=p.shape)
    return layer


# --------------------------------------------------------------------------------------------
# Gradients


GRAD_CASES = [(v, {}) for v in VARIANTS] + [
    ("peephole", {"bias": False}),
    ("cifg", {"bias": False}),
    ("layernorm", {"bias": False}),
    ("nfg", {"forget_bias": 0.0}),
]


@pytest.mark.slow
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("variant,opts", GRAD_CASES, ids=lambda c: str(c))
def test_variant_gradients(variant, opts, num_layers):
    """Central differences, float64: every parameter, the input and the initial state."""
    rng = np.random.default_rng(11)
    B, T, D, H = 2, 4, 3, 4
    layer = perturbed(gs.LSTM(D, H, num_layers, variant=variant, seed=5, **opts), rng)
    assert_gradients_match(layer, rng, B, T, TOL)


@pytest.mark.parametrize("variant", VARIANTS)
def test_backward_with_only_final_state_gradient(variant):
    rng = np.random.default_rng(3)
    layer = perturbed(gs.LSTM(3, 4, variant=variant), rng)
    layer(rng.normal(size=(2, 5, 3)))
    dstate = random_state(layer, 2, rng)
    dx_none = layer.backward(None, dstate)
    g_none = {k: v.copy() for k, v in layer.grads.items()}
    dx_zero = layer.backward(np.zeros((2, 5, 4)), dstate)
    np.testing.assert_array_equal(dx_none, dx_zero)
    for k, v in layer.grads.items():
        np.testing.assert_array_equal(g_none[k], v)


def test_generic_vanilla_equals_fast_path():
    """The readable variant code with variant='vanilla' computes what lstm_forward does."""
    rng = np.random.default_rng(4)
    T, B, D, H = 6, 3, 5, 7
    p = perturbed(gs.LSTM(D, H, seed=1), rng).layer_params(0)
    x, h0, c0 = rng.normal(size=(T, B, D)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    dy, dhT, dcT = rng.normal(size=(T, B, H)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    fast = lstm_forward(x, h0, c0, p["weight_ih"], p["weight_hh"], p["bias"])
    slow = lv.variant_forward("vanilla", x, h0, c0, p)
    for name in ("gates", "hs", "cs"):
        np.testing.assert_allclose(getattr(slow, name), getattr(fast, name), rtol=0, atol=1e-13)
    dx, dh0, dc0, dwi, dwh, db = lstm_backward(fast, dy, dhT, dcT, p["weight_ih"], p["weight_hh"])
    sdx, sdh0, sdc0, g = lv.variant_backward(slow, p, dy, dhT, dcT)
    for a, b in [(sdx, dx), (sdh0, dh0), (sdc0, dc0), (g["weight_ih"], dwi),
                 (g["weight_hh"], dwh), (g["bias"], db)]:  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Forward: the equations and the trace


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_step_by_step_reference(variant, bias):
    rng = np.random.default_rng(7)
    B, T, D, H = 3, 6, 4, 5
    layer = perturbed(gs.LSTM(D, H, variant=variant, bias=bias, seed=2), rng, scale=0.5)
    x = rng.normal(size=(B, T, D))
    h, c = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    y, (hT, cT) = layer(x, (h, c))
    tr = layer.trace
    p = layer.layer_params(0)
    for t in range(T):
        step = reference_step(variant, p, x[:, t], h, c)
        for name, want in zip("ifgoch", step):
            np.testing.assert_allclose(tr[name][:, t], want, rtol=1e-12, atol=1e-12, err_msg=name)
        h, c = step[5], step[4]
    np.testing.assert_allclose(y[:, -1], hT, rtol=0, atol=0)
    np.testing.assert_allclose(hT, h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cT, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_trace_is_consistent(variant, num_layers):
    """c_t = f c_{t-1} + i g and h_t = o s_t for every variant, the constants in place."""
    rng = np.random.default_rng(8)
    B, T, D, H = 2, 7, 3, 6
    layer = perturbed(gs.LSTM(D, H, num_layers, variant=variant), rng)
    state0 = random_state(layer, B, rng)
    layer(rng.normal(size=(B, T, D)), state0)
    tr = layer.trace
    assert set(tr) == {"i", "f", "g", "o", "c", "h"}
    for k in range(num_layers):
        i, f, g, o, c, h = (tr[n][k] if num_layers > 1 else tr[n] for n in "ifgoch")
        assert all(a.shape == (B, T, H) for a in (i, f, g, o, c, h))
        c0 = state0[1][k] if num_layers > 1 else state0[1]
        c_prev = np.concatenate([c0[:, None], c[:, :-1]], axis=1)
        np.testing.assert_allclose(c, f * c_prev + i * g, rtol=1e-13, atol=1e-13)
        if variant == "noaf":
            s = c
        elif variant == "layernorm":
            p = layer.layer_params(k)
            s = np.tanh(ln(c) * p["ln_gain_c"] + p["ln_bias_c"])
        else:
            s = np.tanh(c)
        np.testing.assert_allclose(h, o * s, rtol=1e-12, atol=1e-13)
        assert np.all((f >= 0) & (f <= 1) & (i >= 0) & (i <= 1) & (o >= 0) & (o <= 1))
        if variant == "nig":
            np.testing.assert_array_equal(i, 1)
        if variant == "nfg":
            np.testing.assert_array_equal(f, 1)
        if variant == "nog":
            np.testing.assert_array_equal(o, 1)
        if variant == "cifg":
            np.testing.assert_array_equal(i, 1 - f)
        if variant not in ("nig", "cifg"):
            assert np.ptp(i) > 0
        if variant != "nfg":
            assert np.ptp(f) > 0


def test_peephole_starts_as_vanilla_and_then_differs():
    """Peepholes are initialised to 0: same seed, same function; moved, a different one."""
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    y0, _ = gs.LSTM(3, 4, seed=9)(x)
    peep = gs.LSTM(3, 4, variant="peephole", seed=9)
    np.testing.assert_allclose(peep(x)[0], y0, rtol=0, atol=1e-14)  # fast path vs readable
    peep.params["peephole_l0"][...] = 0.5
    assert not np.allclose(peep(x)[0], y0)


def test_layernorm_is_invariant_to_weight_scale(monkeypatch):
    """LN(x W^T) does not see the scale of W (exactly so with eps = 0): Ba et al.'s point."""
    monkeypatch.setattr(lv, "LN_EPS", 0.0)
    rng = np.random.default_rng(1)
    layer = perturbed(gs.LSTM(3, 8, variant="layernorm"), rng)
    x, state0 = rng.normal(size=(2, 6, 3)), random_state(layer, 2, rng)
    y0, _ = layer(x, state0)
    layer.params["weight_ih_l0"] *= 10
    layer.params["weight_hh_l0"] *= 0.2
    np.testing.assert_allclose(layer(x, state0)[0], y0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32(variant):
    layer = gs.LSTM(3, 4, 2, variant=variant, dtype=np.float32)
    assert all(p.dtype == np.float32 for p in layer.params.values())
    y, (h, c) = layer(np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32))
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == h.dtype == c.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())
    assert all(a.dtype == np.float32 for a in layer.trace.values())


def test_large_preactivations_are_finite():
    for variant in VARIANTS:
        layer = gs.LSTM(3, 4, variant=variant)
        for p in layer.params.values():
            p *= 300
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y, _ = layer(np.full((2, 5, 3), 10.0))
            layer.backward(np.ones_like(y))
        assert np.isfinite(y).all()
        assert all(np.isfinite(g).all() for g in layer.grads.values())


# --------------------------------------------------------------------------------------------
# Parameters and configuration


def test_parameter_counts():
    D, H = 4, 32
    n = {v: gs.LSTM(D, H, variant=v).num_params() for v in VARIANTS}
    assert n["vanilla"] == 4736  # the chapter's count, unchanged
    assert n["peephole"] == 4736 + 3 * H
    assert n["noaf"] == 4736
    for v in ("cifg", "nfg", "nig", "nog"):
        assert n[v] == 3 * H * (D + H + 1) == 3552  # one gate block fewer
    assert n["layernorm"] == 4736 + 4 * H + 4 * H + H + H
    for v in VARIANTS:
        for bias in (True, False):
            layer = gs.LSTM(D, H, 3, variant=v, bias=bias)
            want = lv.param_count(v, D, H, bias) + 2 * lv.param_count(v, H, H, bias)
            assert layer.num_params() == want
            assert layer.params.keys() == layer.grads.keys()


def test_parameter_shapes_and_initial_values():
    H, D = 5, 3
    cifg = gs.LSTM(D, H, variant="cifg", forget_bias=2.0).layer_params(0)
    assert cifg["weight_ih"].shape == (3 * H, D) and cifg["weight_hh"].shape == (3 * H, H)
    np.testing.assert_array_equal(cifg["bias"], [2.0] * H + [0.0] * 2 * H)  # blocks f g o
    nfg = gs.LSTM(D, H, variant="nfg", forget_bias=2.0).layer_params(0)
    np.testing.assert_array_equal(nfg["bias"], 0.0)  # blocks i g o: no forget gate to bias
    nog = gs.LSTM(D, H, variant="nog").layer_params(0)
    np.testing.assert_array_equal(nog["bias"], [0.0] * H + [1.0] * H + [0.0] * H)  # i f g
    peep = gs.LSTM(D, H, variant="peephole").layer_params(0)
    np.testing.assert_array_equal(peep["peephole"], np.zeros(3 * H))
    lnp = gs.LSTM(D, H, variant="layernorm").layer_params(0)
    assert {k: v.shape for k, v in lnp.items() if k.startswith("ln_")} == {
        "ln_gain_ih": (4 * H,),
        "ln_gain_hh": (4 * H,),
        "ln_gain_c": (H,),
        "ln_bias_c": (H,),
    }
    np.testing.assert_array_equal(lnp["ln_gain_ih"], 1.0)
    assert "ln_bias_c" not in gs.LSTM(D, H, variant="layernorm", bias=False).params.keys()


@pytest.mark.torch
def test_default_variant_is_vanilla_and_unchanged():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4, 5))
    a, b = gs.LSTM(5, 6, 2, seed=3), gs.LSTM(5, 6, 2, seed=3, variant="vanilla")
    assert a.config.variant == "vanilla" and a.config == b.config
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    assert gs.from_torch(gs.to_torch(a)).config.variant == "vanilla"


@pytest.mark.torch
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "vanilla"])
def test_to_torch_refuses_variants(variant):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=f"to_torch.*{variant}"):
        gs.to_torch(gs.LSTM(3, 4, variant=variant))


def test_bad_variant_is_refused():
    with pytest.raises(ValueError, match="variant must be one of vanilla, peephole"):
        gs.LSTM(3, 4, variant="peepholes")
    with pytest.raises(ValueError, match="variant='cifg' is an LSTM option"):
        RecurrentConfig("gru", 3, 4, variant="cifg")


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_and_checkpoint_round_trip(variant, tmp_path):
    """config.to_dict() + params -> safetensors -> build_recurrent rebuilds the same layer."""
    rng = np.random.default_rng(6)
    layer = perturbed(gs.LSTM(3, 4, 2, variant=variant, seed=1), rng)
    x = rng.normal(size=(2, 5, 3))
    y, _ = layer(x)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, layer.params, {"config": layer.config.to_dict()})
    tensors, meta = load_checkpoint(path)
    again = build_recurrent(RecurrentConfig(**meta["config"]), seed=123)
    assert again.config == layer.config and again.params.keys() == tensors.keys()
    for k, v in tensors.items():
        again.params[k][...] = v
    np.testing.assert_array_equal(again(x)[0], y)
    old = {k: v for k, v in layer.config.to_dict().items() if k != "variant"}
    assert RecurrentConfig(**old).variant == "vanilla"  # configs saved before variants load


# --------------------------------------------------------------------------------------------
# Training and the command line


def test_train_cli_variant(tmp_path, run_cli):
    from gatescope.model import load_model

    out = tmp_path / "m.safetensors"
    argv = ["train", "--task", "adding", "--arch", "lstm", "--variant", "peephole", "--length", "6"]
    argv += ["--hidden", "4", "--steps", "3", "--eval-every", "3", "--quiet", "--out", str(out)]
    assert run_cli(*argv).code == 0
    model, _ = load_model(out)
    assert model.recurrent.config.variant == "peephole"
    assert "rnn.peephole_l0" in model.params
    assert run_cli("evaluate", out).code == 0
    # resuming with another variant is refused; a GRU has no variants
    res = run_cli("train", "--resume", out, "--variant", "cifg", "--steps", "4")
    assert res.code == 2
    assert "--variant cifg (the checkpoint has peephole)" in res.err
    gru = ["train", "--task", "adding", "--arch", "gru", "--variant", "nog", "--out", f"{out}2"]
    res = run_cli(*gru)
    assert res.code == 2
    assert "--variant applies to --arch lstm only" in res.err
    # argparse's own error (an unknown choice): it exits through SystemExit, code 2
    assert run_cli("train", "--task", "adding", "--arch", "lstm", "--variant", "bogus").code == 2


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_train(variant):
    """Every variant learns: a short fit lowers the adding problem's loss well below baseline."""
    from gatescope.model import SequenceModel
    from gatescope.tasks import get_task
    from gatescope.train import TrainConfig, evaluate_model, fit

    task = get_task("adding", 8)
    model = SequenceModel.for_task(task, "lstm", 16, seed=0, variant=variant)
    fit(task, model, TrainConfig(steps=300, lr=1e-2, eval_every=100), progress=False)
    assert evaluate_model(task, model, n=500)["mse"] < 0.5 * task.baseline


# --------------------------------------------------------------------------------------------
# The instruments


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_inspection_and_figures_work(variant):
    """Every instrument and figure of gatescope.inspect / viz takes a variant unchanged; the
    measured dc_T/dc_k agrees with finite differences. Along the cell alone (cut_h) it is
    the product of forget gates, except with peepholes, where the cell also feeds i and f."""
    from gatescope import inspect as gi
    from gatescope.viz import figures as vf

    rng = np.random.default_rng(12)
    B, T, D, H = 2, 6, 3, 4
    layer = perturbed(gs.LSTM(D, H, variant=variant), rng)
    x = rng.normal(size=(B, T, D))
    full = gi.cell_state_jacobian(layer, x)
    for k in (0, 3):
        fd = gi.finite_difference_cell_jacobian(layer, x, k)
        np.testing.assert_allclose(full[:, k], fd, rtol=1e-6, atol=1e-8)
    cut = gi.cell_state_jacobian(layer, x, cut_h=True)
    layer(x)
    prod = gi.forget_gate_product(layer.trace["f"])
    if variant == "peephole":
        assert np.abs(cut - prod).max() > 1e-3
    else:
        np.testing.assert_allclose(cut, prod, rtol=1e-12, atol=1e-14)
    dy = np.ones((B, T, H))
    figures = [
        vf.gate_heatmaps(gi.gate_activations(layer, x[0]), "lstm"),
        vf.gate_traces_figure(gi.gate_traces(layer, x), "lstm"),
        vf.saturation_figure(gi.saturation(layer, x), "lstm"),
        vf.gradient_flow_figure({"untrained": {"lstm": gi.gradient_flow(layer, x, dy=dy)}}),
        vf.forget_product_figure(prod[0], cut[0], full[0]),
    ]
    assert all(len(vf.png_bytes(f)) > 1000 for f in figures)
