"""gatescope.optim against torch.optim / torch.nn.utils, plus state round-trips and validation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gatescope.optim import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    Optimizer,
    RMSProp,
    clip_grad_norm,
    clip_grad_value,
    make_optimizer,
)

pytestmark = pytest.mark.torch

SHAPES = {
    "rnn.weight_ih_l0": (8, 3),
    "rnn.weight_hh_l0": (8, 2),
    "rnn.bias_l0": (8,),
    "head.weight": (2, 2, 3),
}

TORCH_CLASSES = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

# Our buffer name -> torch's state key.
TORCH_STATE_KEYS = {
    "sgd": {"momentum": "momentum_buffer"},
    "adam": {"m": "exp_avg", "v": "exp_avg_sq"},
    "rmsprop": {"square_avg": "square_avg", "momentum": "momentum_buffer"},
    "adagrad": {"sum": "sum"},
}

# (name, our kwargs); torch gets the same kwargs (betas as a tuple, foreach=False).
CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.02, "momentum": 0.5, "nesterov": True, "weight_decay": 0.1}),
    ("adam", {}),
    ("adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("adam", {"lr": 0.3, "betas": (0.3, 0.5)}),  # the other branch of torch's lerp
    ("rmsprop", {}),
    ("rmsprop", {"lr": 1e-3, "momentum": 0.9}),
    ("rmsprop", {"lr": 0.1, "alpha": 0.5, "eps": 1e-4, "momentum": 0.3}),
    ("adagrad", {}),
    ("adagrad", {"lr": 0.5, "eps": 1e-6}),
]
CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def make_params(seed: int, shapes=SHAPES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in shapes.items()}


def make_grads(seed: int, n_steps: int, shapes=SHAPES) -> list[dict[str, np.ndarray]]:
    """Random gradients of varied magnitude, with some exact zeros."""
    rng = np.random.default_rng(seed)
    seq = []
    for _ in range(n_steps):
        g = {}
        for k, s in shapes.items():
            a = rng.standard_normal(s) * 10.0 ** rng.uniform(-3, 1)
            a[rng.random(s) < 0.1] = 0.0
            g[k] = a
        seq.append(g)
    return seq


def copy_arrays(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in d.items()}


def torch_kwargs(kw: dict) -> dict:
    out = dict(kw)
    if "betas" in out:
        out["betas"] = tuple(out["betas"])
    out["foreach"] = False
    return out


def run_torch(name: str, kw: dict, params: dict, grads_seq: list) -> tuple[list, list]:
    """Per step: the params and the optimizer state (numpy, by torch state key)."""
    tparams = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    opt = TORCH_CLASSES[name](list(tparams.values()), **torch_kwargs(kw))
    p_hist, s_hist = [], []
    for grads in grads_seq:
        for k, p in tparams.items():
            p.grad = torch.from_numpy(grads[k].copy())
        opt.step()
        p_hist.append({k: p.detach().numpy().copy() for k, p in tparams.items()})
        state = {}
        for k, p in tparams.items():
            for sk, sv in opt.state[p].items():
                if isinstance(sv, torch.Tensor) and sv.shape == p.shape:
                    state[(sk, k)] = sv.detach().numpy().copy()
        s_hist.append(state)
    return p_hist, s_hist


def assert_dicts_close(a: dict, b: dict, tol: float = 1e-12) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=tol, atol=tol, err_msg=str(k))


def assert_dicts_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=str(k), strict=True)


# ------------------------------------------------------------------------ equality with torch


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_matches_torch(name, kw):
    params = make_params(0)
    grads_seq = make_grads(1, 5)
    torch_params, torch_states = run_torch(name, kw, params, grads_seq)

    ours = copy_arrays(params)
    opt = make_optimizer(name, ours, **kw)
    for t, grads in enumerate(grads_seq, start=1):
        opt.step(grads)
        assert opt.step_count == t
        assert_dicts_close(ours, torch_params[t - 1])
        sd = opt.state_dict()
        expected_state = {}
        for buf, tkey in TORCH_STATE_KEYS[name].items():
            if f"{name}.{buf}.{next(iter(SHAPES))}" in sd:
                for k in SHAPES:
                    expected_state[(tkey, k)] = sd[f"{name}.{buf}.{k}"]
        assert_dicts_close(expected_state, torch_states[t - 1])
    # The updates were not trivial.
    assert max(np.abs(ours[k] - params[k]).max() for k in params) > 1e-4


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(OPTIMIZERS)),
    lr=st.floats(1e-4, 0.5),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    nesterov=st.booleans(),
    weight_decay=st.sampled_from([0.0, 1e-3, 0.1]),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.0, 0.9999),
    eps=st.sampled_from([1e-10, 1e-8, 1e-3]),
    rows=st.integers(1, 5),
    cols=st.integers(1, 5),
    seed=st.integers(0, 2**31),
)
def test_matches_torch_random_hyperparams(
    name, lr, momentum, nesterov, weight_decay, beta1, beta2, eps, rows, cols, seed
):
    kw = {
        "sgd": {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov and momentum > 0,
            "weight_decay": weight_decay,
        },
        "adam": {"lr": lr, "betas": (beta1, beta2), "eps": eps, "weight_decay": weight_decay},
        "rmsprop": {"lr": lr, "alpha": beta2, "eps": eps, "momentum": momentum},
        "adagrad": {"lr": lr, "eps": eps},
    }[name]
    shapes = {"a": (rows, cols), "b": (cols,)}
    params = make_params(seed, shapes)
    grads_seq = make_grads(seed + 1, 4, shapes)
    torch_params, _ = run_torch(name, kw, params, grads_seq)
    ours = copy_arrays(params)
    opt = make_optimizer(name, ours, **kw)
    for grads in grads_seq:
        opt.step(grads)
    assert_dicts_close(ours, torch_params[-1], tol=1e-11)


# -------------------------------------------------------------------------- in-place contract


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_step_updates_in_place_and_leaves_grads_alone(name, kw):
    params = make_params(2)
    views = {k: v[...] for k, v in params.items()}  # another holder of the same memory
    before = copy_arrays(params)
    grads = make_grads(3, 1)[0]
    grads_before = copy_arrays(grads)
    opt = make_optimizer(name, params, **kw)
    opt.step(grads)
    for k in params:
        assert opt.params[k] is params[k]
        np.testing.assert_array_equal(views[k], params[k])
        assert not np.array_equal(params[k], before[k])
    assert_dicts_equal(grads, grads_before)


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_step_allocates_no_arrays(name, kw):
    shapes = {"w": (256, 256), "b": (256,)}  # w alone is 512 KiB
    params = make_params(4, shapes)
    grads_seq = make_grads(5, 3, shapes)
    opt = make_optimizer(name, params, **kw)
    opt.step(grads_seq[0])  # lazily made buffers, if any, exist from here on
    tracemalloc.start()
    try:
        opt.step(grads_seq[1])
        opt.step(grads_seq[2])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024


# ------------------------------------------------------------------------------ state dicts


@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_state_dict_layout(name, kw):
    params = make_params(6)
    opt = make_optimizer(name, params, **kw)
    opt.step(make_grads(7, 1)[0])
    sd = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert all(k.startswith(f"{name}.") for k in sd)
    step = sd[f"{name}.step"]
    assert step.dtype == np.int64 and step.shape == (1,) and step[0] == 1
    for buf in opt._buffer_names():
        for k, p in params.items():
            arr = sd[f"{name}.{buf}.{k}"]
            assert arr.shape == p.shape and arr.dtype == p.dtype
            assert not np.shares_memory(arr, opt._state[buf][k])  # a copy
    for hp, v in opt.hyperparams().items():
        assert sd[f"{name}.hp.{hp}"].shape == (1,)
        assert sd[f"{name}.hp.{hp}"][0] == v


@pytest.mark.parametrize("via_safetensors", [False, True], ids=["dict", "safetensors"])
@pytest.mark.parametrize(("name", "kw"), CASES, ids=CASE_IDS)
def test_state_dict_round_trip_is_bit_identical(name, kw, via_safetensors, tmp_path):
    params = make_params(8)
    grads_seq = make_grads(9, 6)

    # The uninterrupted run.
    full = copy_arrays(params)
    opt_full = make_optimizer(name, full, **kw)
    for grads in grads_seq:
        opt_full.step(grads)

    # Three steps, save, resume in a fresh optimizer on copied params, three more steps.
    first = copy_arrays(params)
    opt_first = make_optimizer(name, first, **kw)
    for grads in grads_seq[:3]:
        opt_first.step(grads)
    sd = opt_first.state_dict()
    saved = copy_arrays(sd)
    resumed = copy_arrays(first)  # the params as they were saved
    opt_first.step(grads_seq[3])  # keeps going: the saved dict must not change
    assert_dicts_equal(sd, saved)
    if via_safetensors:
        path = tmp_path / "opt.safetensors"
        safetensors.numpy.save_file(sd, str(path))
        sd = safetensors.numpy.load_file(str(path))
        assert_dicts_equal(sd, saved)

    opt_resumed = make_optimizer(name, resumed, **kw)
    opt_resumed.load_state_dict(sd)
    assert opt_resumed.step_count == 3
    for grads in grads_seq[3:]:
        opt_resumed.step(grads)

    assert_dicts_equal(resumed, full)
    assert_dicts_equal(opt_resumed.state_dict(), opt_full.state_dict())


def test_load_state_dict_restores_hyperparams_and_buffers():
    src = Adam(make_params(10), lr=0.01, betas=(0.8, 0.9), eps=1e-5, weight_decay=0.2)
    src.step(make_grads(11, 1)[0])
    dst = Adam(make_params(12))
    dst.load_state_dict(src.state_dict())
    assert (dst.lr, dst.betas, dst.eps, dst.weight_decay) == (0.01, (0.8, 0.9), 1e-5, 0.2)
    assert_dicts_equal(dst.state_dict(), src.state_dict())

    # SGD without momentum (no buffer) loads a state with momentum (a buffer), and back.
    sgd_m = SGD(make_params(10), lr=0.1, momentum=0.9, nesterov=True)
    sgd_m.step(make_grads(11, 1)[0])
    sgd = SGD(make_params(12), lr=0.5)
    sgd.load_state_dict(sgd_m.state_dict())
    assert (sgd.lr, sgd.momentum, sgd.nesterov) == (0.1, 0.9, True)
    assert_dicts_equal(sgd.state_dict(), sgd_m.state_dict())
    sgd_plain = SGD(make_params(12), lr=0.5)
    sgd.load_state_dict(sgd_plain.state_dict())
    assert_dicts_equal(sgd.state_dict(), sgd_plain.state_dict())
    assert not any(".momentum." in k for k in sgd.state_dict())


def _broken_state_dicts():
    opt = RMSProp(make_params(13), momentum=0.5)
    opt.step(make_grads(14, 1)[0])
    good = opt.state_dict()
    key = "rmsprop.square_avg.rnn.bias_l0"
    missing = {k: v for k, v in good.items() if k != key}
    extra = {**good, "rmsprop.square_avg.nope": np.zeros(3)}
    bad_shape = {**good, key: np.zeros(9)}
    bad_dtype = {**good, key: np.zeros(8, dtype=np.int64)}
    no_step = {k: v for k, v in good.items() if k != "rmsprop.step"}
    neg_step = {**good, "rmsprop.step": np.array([-1], dtype=np.int64)}
    float_step = {**good, "rmsprop.step": np.array([1.0])}
    bad_hp = {**good, "rmsprop.hp.lr": np.array([-1.0])}
    bad_hp_late = {**good, "rmsprop.hp.lr": np.array([0.123]), key: np.zeros(9)}
    adam_sd = Adam(make_params(13)).state_dict()
    return {
        "missing": missing,
        "extra": extra,
        "bad_shape": bad_shape,
        "bad_dtype": bad_dtype,
        "no_step": no_step,
        "neg_step": neg_step,
        "float_step": float_step,
        "bad_hp": bad_hp,
        "bad_hp_late": bad_hp_late,
        "other_optimizer": adam_sd,
    }


@pytest.mark.parametrize("case", sorted(_broken_state_dicts()))
def test_load_state_dict_rejects_bad_dicts_and_changes_nothing(case):
    bad = _broken_state_dicts()[case]
    opt = RMSProp(make_params(15), lr=0.05, alpha=0.9)
    opt.step(make_grads(16, 1)[0])
    before = opt.state_dict()
    with pytest.raises(ValueError, match="state dict"):
        opt.load_state_dict(bad)
    assert_dicts_equal(opt.state_dict(), before)
    assert opt.lr == 0.05 and opt.step_count == 1


# ------------------------------------------------------------------------------ validation


BAD_HYPERPARAMS = [
    (SGD, {"lr": 0.0}, "lr"),
    (SGD, {"lr": -0.1}, "lr"),
    (SGD, {"lr": float("nan")}, "lr"),
    (SGD, {"lr": float("inf")}, "lr"),
    (SGD, {"lr": "0.1"}, "lr"),
    (SGD, {"lr": True}, "lr"),
    (SGD, {"lr": 0.1, "momentum": -0.5}, "momentum"),
    (SGD, {"lr": 0.1, "nesterov": True}, "nesterov"),
    (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": "yes"}, "nesterov"),
    (SGD, {"lr": 0.1, "weight_decay": -1e-4}, "weight_decay"),
    (Adam, {"lr": -1e-3}, "lr"),
    (Adam, {"betas": (1.0, 0.999)}, "beta1"),
    (Adam, {"betas": (-0.1, 0.999)}, "beta1"),
    (Adam, {"betas": (0.9, 1.5)}, "beta2"),
    (Adam, {"betas": (0.9,)}, "betas"),
    (Adam, {"eps": 0.0}, "eps"),
    (Adam, {"weight_decay": -1.0}, "weight_decay"),
    (RMSProp, {"lr": 0.0}, "lr"),
    (RMSProp, {"alpha": 1.0}, "alpha"),
    (RMSProp, {"alpha": -0.1}, "alpha"),
    (RMSProp, {"eps": -1e-8}, "eps"),
    (RMSProp, {"momentum": -0.9}, "momentum"),
    (Adagrad, {"lr": 0.0}, "lr"),
    (Adagrad, {"eps": 0.0}, "eps"),
]


@pytest.mark.parametrize(("cls", "kw", "arg"), BAD_HYPERPARAMS)
def test_bad_hyperparams_raise_value_error_naming_the_argument(cls, kw, arg):
    with pytest.raises(ValueError, match=arg) as info:
        cls(make_params(17), **kw)
    bad_value = kw.get(arg, kw.get("betas"))
    if arg in kw:
        assert repr(bad_value) in str(info.value)


@pytest.mark.parametrize(
    "params",
    [
        {},
        [np.zeros(3)],
        {"w": [1.0, 2.0]},
        {"w": np.zeros(3, dtype=np.int64)},
        {1: np.zeros(3)},
    ],
    ids=["empty", "list", "not-array", "int-dtype", "int-key"],
)
def test_bad_params_raise_value_error(params):
    with pytest.raises(ValueError, match="params"):
        SGD(params, lr=0.1)


def test_read_only_params_raise_value_error():
    w = np.zeros(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        Adam({"w": w})


@pytest.mark.parametrize(
    "mutate",
    [
        lambda g: g.pop("rnn.bias_l0"),
        lambda g: g.update({"extra": np.zeros(2)}),
        lambda g: g.update({"rnn.bias_l0": np.zeros(9)}),
        lambda g: g.update({"rnn.bias_l0": [0.0] * 8}),
    ],
    ids=["missing", "extra", "shape", "not-array"],
)
def test_bad_grads_raise_value_error_and_change_nothing(mutate):
    params = make_params(18)
    before = copy_arrays(params)
    opt = Adam(params)
    grads = make_grads(19, 1)[0]
    mutate(grads)
    with pytest.raises(ValueError, match="grads"):
        opt.step(grads)
    assert opt.step_count == 0
    assert_dicts_equal(params, before)


# ------------------------------------------------------------------------------- factory


def test_make_optimizer_builds_each_optimizer():
    expected = {"sgd": SGD, "adam": Adam, "rmsprop": RMSProp, "adagrad": Adagrad}
    assert dict(OPTIMIZERS) == expected
    for name, cls in expected.items():
        kw = {"lr": 0.25}
        opt = make_optimizer(name, make_params(20), **kw)
        assert type(opt) is cls and isinstance(opt, Optimizer)
        assert opt.lr == 0.25
    opt = make_optimizer("Adam", make_params(20), betas=(0.5, 0.6))
    assert isinstance(opt, Adam) and opt.betas == (0.5, 0.6)


def test_make_optimizer_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="lbfgs") as info:
        make_optimizer("lbfgs", make_params(21))
    for name in ("sgd", "adam", "rmsprop", "adagrad"):
        assert name in str(info.value)


def test_make_optimizer_unknown_keyword_lists_valid_keywords():
    with pytest.raises(ValueError, match="betas") as info:
        make_optimizer("adagrad", make_params(22), betas=(0.9, 0.99))
    assert "eps" in str(info.value) and "lr" in str(info.value)


# ------------------------------------------------------------------------------- clipping


def torch_grads(grads: dict[str, np.ndarray]) -> list[torch.nn.Parameter]:
    ps = []
    for g in grads.values():
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64))
        p.grad = torch.from_numpy(g.copy())
        ps.append(p)
    return ps


@pytest.mark.parametrize("max_norm", [1e-3, 0.5, 3.0, 1e6, "exact"])
def test_clip_grad_norm_matches_torch(max_norm):
    grads = make_grads(23, 1)[0]
    norm_expected = float(np.sqrt(sum((g**2).sum() for g in grads.values())))
    if max_norm == "exact":  # torch still scales here, by max_norm / (norm + 1e-6)
        max_norm = norm_expected
    tps = torch_grads(grads)
    torch_norm = torch.nn.utils.clip_grad_norm_(tps, max_norm, foreach=False)
    norm = clip_grad_norm(grads, max_norm)
    assert isinstance(norm, float)
    assert norm == pytest.approx(float(torch_norm), rel=1e-14)
    assert norm == pytest.approx(norm_expected, rel=1e-14)
    for g, p in zip(grads.values(), tps, strict=True):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-13, atol=1e-15)
    after = float(np.sqrt(sum((g**2).sum() for g in grads.values())))
    assert after <= max_norm * (1 + 1e-12)


def test_clip_grad_norm_below_threshold_leaves_grads_bitwise_alone():
    grads = make_grads(24, 1)[0]
    before = copy_arrays(grads)
    norm = clip_grad_norm(grads, 1e9)
    assert norm > 0
    assert_dicts_equal(grads, before)


@pytest.mark.parametrize(
    ("bad", "check"),
    [(np.inf, np.isposinf), (-np.inf, np.isposinf), (np.nan, np.isnan), (1e200, np.isposinf)],
    ids=["inf", "-inf", "nan", "overflow"],
)
def test_clip_grad_norm_non_finite_leaves_grads_alone(bad, check):
    grads = make_grads(25, 1)[0]
    if bad == 1e200:
        grads["rnn.bias_l0"][:] = 1e200  # finite entries whose squares overflow
    else:
        grads["rnn.bias_l0"][3] = bad
    before = copy_arrays(grads)
    norm = clip_grad_norm(grads, 1.0)
    assert check(norm)
    assert_dicts_equal(grads, before)


def test_clip_grad_norm_empty_and_bad_max_norm():
    assert clip_grad_norm({}, 1.0) == 0.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_norm"):
            clip_grad_norm(make_grads(26, 1)[0], bad)


@pytest.mark.parametrize("clip_value", [1e-3, 0.5, 100.0])
def test_clip_grad_value_matches_torch(clip_value):
    grads = make_grads(27, 1)[0]
    grads["rnn.bias_l0"][0] = np.nan
    arrays = list(grads.values())
    tps = torch_grads(grads)
    torch.nn.utils.clip_grad_value_(tps, clip_value, foreach=False)
    assert clip_grad_value(grads, clip_value) is None
    for g, a, p in zip(grads.values(), arrays, tps, strict=True):
        assert g is a  # in place
        np.testing.assert_array_equal(g, p.grad.numpy(), strict=True)
    assert np.isnan(grads["rnn.bias_l0"][0])


def test_clip_grad_value_bad_value():
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="clip_value"):
            clip_grad_value(make_grads(28, 1)[0], bad)


def test_every_optimizer_state_fits_in_a_checkpoint(tmp_path):
    """state_dict holds only dtypes checkpoints store (flags as int64), and round-trips."""
    from gatescope.checkpoint import load_checkpoint, save_checkpoint

    for name, kw in [
        ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("adam", {}),
        ("rmsprop", {"momentum": 0.5}),
        ("adagrad", {}),
    ]:
        params = {"w": np.ones((2, 3))}
        opt = make_optimizer(name, params, **kw)
        opt.step({"w": np.full((2, 3), 0.5)})
        save_checkpoint(tmp_path / f"{name}.safetensors", opt.state_dict(), {})
        loaded, _ = load_checkpoint(tmp_path / f"{name}.safetensors")
        fresh = make_optimizer(name, {"w": params["w"].copy()}, **kw)
        fresh.load_state_dict(loaded)
        assert fresh.hyperparams() == opt.hyperparams()
