"""SequenceModel: exact gradients, the head per kind, configs, and model files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import central_difference, rel_error

from gatescope.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gatescope.model import ModelConfig, SequenceModel, load_model, read_model_file, save_model
from gatescope.tasks import Batch, get_task

B, T, D, H, C = 2, 4, 3, 4, 3


def tiny_batch(kind: str, rng: np.random.Generator) -> Batch:
    x = rng.normal(size=(B, T, D))
    if kind == "classify_last":
        return Batch(x=x, y=rng.integers(0, C, size=B))
    if kind == "regress_last":
        return Batch(x=x, y=rng.normal(size=(B, C)))
    mask = rng.random((B, T)) < 0.7
    mask[0, 0] = True  # at least one counted step
    return Batch(x=x, y=rng.integers(0, C, size=(B, T)), mask=mask)


@pytest.mark.parametrize("kind", ["classify_last", "regress_last", "classify_steps"])
@pytest.mark.parametrize("arch,layers", [("lstm", 1), ("gru", 2), ("rnn", 1)])
def test_gradients_match_central_differences(kind, arch, layers):
    rng = np.random.default_rng(1)
    model = SequenceModel.build(arch, D, H, C, kind, num_layers=layers, seed=2)
    for p in model.params.values():  # nonzero biases so that every gradient is exercised
        p += rng.normal(scale=0.1, size=p.shape)
    batch = tiny_batch(kind, rng)

    def loss() -> float:
        return model.loss(model.forward(batch.x), batch)[0]

    out = model.forward(batch.x)
    _, dout = model.loss(out, batch)
    dx = model.backward(dout)
    analytic = {k: g.copy() for k, g in model.grads.items()}
    for k, p in model.params.items():
        numeric = central_difference(loss, p)
        assert rel_error(analytic[k], numeric) < 1e-6, k
    x = batch.x.copy()

    def loss_x() -> float:
        return model.loss(model.forward(x), batch)[0]

    assert rel_error(dx, central_difference(loss_x, x)) < 1e-6


def test_output_shapes_and_head_reads_last_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, D))
    last = SequenceModel.build("lstm", D, H, C, "classify_last", seed=0)
    steps = SequenceModel.build("lstm", D, H, C, "classify_steps", seed=0)
    out_last, out_steps = last.forward(x), steps.forward(x)
    assert out_last.shape == (B, C) and out_steps.shape == (B, T, C)
    # same seed, same weights: the last-step head is the per-step head at t = T-1
    np.testing.assert_array_equal(out_last, out_steps[:, -1, :])


def test_params_and_grads_share_memory_with_the_parts():
    model = SequenceModel.build("gru", D, H, C, "regress_last", seed=0, reset_after=True)
    assert set(model.params) == set(model.grads)
    assert "rnn.bias_hn_l0" in model.params and "head.weight" in model.params
    for k, v in model.recurrent.params.items():
        assert model.params[f"rnn.{k}"] is v
        assert model.grads[f"rnn.{k}"] is model.recurrent.grads[k]
    assert model.params["head.weight"] is model.head.params["weight"]
    assert model.num_params() == sum(p.size for p in model.params.values())


def test_float32_model_stays_float32():
    model = SequenceModel.build("lstm", D, H, C, "classify_last", dtype="float32")
    batch = tiny_batch("classify_last", np.random.default_rng(0))
    out = model.forward(batch.x)
    _, dout = model.loss(out, batch)
    model.backward(dout)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.grads.values())


def test_for_task_fits_the_task():
    task = get_task("copy", 7)
    model = SequenceModel.for_task(task, "rnn", 5)
    batch = task.make_batch(2, 0)
    out = model.forward(batch.x)
    assert out.shape == (2, task.seq_len, task.output_size)
    assert np.isfinite(model.loss(out, batch)[0])


def test_config_round_trip_through_json():
    config = SequenceModel.build("lstm", D, H, C, "classify_steps", forget_bias=2.0).config
    d = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(d) == config
    assert config.layer_options["forget_bias"] == 2.0


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"kind": "classify_first"}, "kind"),
        ({"arch": "transformer"}, "arch"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"output_size": -1}, "output_size"),
        ({"dtype": "int32"}, "dtype"),
        ({"layer_options": {"peephole": True}}, "unknown layer option"),
        ({"layer_options": {"hidden_size": 3}}, "must not set"),
    ],
)
def test_bad_config_raises_value_error_naming_it(kw, match):
    base = {"arch": "lstm", "input_size": D, "hidden_size": H, "output_size": C}
    base["kind"] = "classify_last"
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**base, **kw})


def test_backward_before_forward_is_a_runtime_error():
    model = SequenceModel.build("rnn", D, H, C, "classify_last")
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.zeros((B, C)))


# ----------------------------------------------------------------------------- files


def test_save_and_load_round_trip(tmp_path):
    model = SequenceModel.build("gru", D, H, C, "classify_last", num_layers=2, seed=3)
    path = tmp_path / "m.safetensors"
    extra = {"optim.adam.step": np.array([7], np.int64)}
    save_model(path, model, {"step": 7, "note": "hi"}, extra)
    loaded, meta = load_model(path)
    assert loaded.config == model.config
    for k, p in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], p)
    assert meta["step"] == 7 and meta["note"] == "hi" and "gatescope_version" in meta
    x = np.random.default_rng(0).normal(size=(2, T, D))
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    _, _, extra_back = read_model_file(path)
    np.testing.assert_array_equal(extra_back["optim.adam.step"], [7])


def test_save_model_refuses_bad_extra_names_and_reserved_meta(tmp_path):
    model = SequenceModel.build("rnn", D, H, C, "classify_last")
    with pytest.raises(ValueError, match="optim"):
        save_model(tmp_path / "m", model, {}, {"stray": np.zeros(1)})
    with pytest.raises(ValueError, match="'model'"):
        save_model(tmp_path / "m", model, {"model": 1})


def test_checkpoint_from_another_architecture_is_refused_naming_the_file(tmp_path):
    gru = SequenceModel.build("gru", D, H, C, "classify_last")
    lstm = SequenceModel.build("lstm", D, H, C, "classify_last")
    path = tmp_path / "mixed.safetensors"
    # GRU weights under an LSTM description: the shapes disagree (3H vs 4H rows)
    save_checkpoint(
        path, gru.params, {"type": "gatescope.SequenceModel", "model": lstm.config.to_dict()}
    )
    with pytest.raises(CheckpointError, match=r"mixed\.safetensors.*rnn\.weight_ih_l0.*expected"):
        load_model(path)


def test_checkpoint_with_wrong_hidden_size_is_refused(tmp_path):
    model = SequenceModel.build("lstm", D, H, C, "classify_last")
    path = tmp_path / "m.safetensors"
    save_model(path, model)
    tensors, meta = load_checkpoint(path)
    meta["model"]["hidden_size"] = H + 1
    save_checkpoint(path, tensors, meta)
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_model(path)


@pytest.mark.parametrize(
    "meta, match",
    [
        ({}, "not a gatescope sequence-model checkpoint"),
        ({"type": "gatescope.CharLM", "model": {}}, "not a gatescope sequence-model"),
        ({"type": "gatescope.SequenceModel", "model": {"arch": "lstm"}}, "invalid model"),
        ({"type": "gatescope.SequenceModel", "model": {"bogus": 1}}, "invalid model"),
    ],
)
def test_foreign_or_broken_metadata_is_refused(tmp_path, meta, match):
    path = tmp_path / "x.safetensors"
    save_checkpoint(path, {"w": np.zeros(2)}, meta)
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


def test_dtype_disagreeing_with_metadata_is_refused(tmp_path):
    model = SequenceModel.build("rnn", D, H, C, "classify_last", dtype="float64")
    path = tmp_path / "m.safetensors"
    tensors = {k: v.astype(np.float32) for k, v in model.params.items()}
    save_checkpoint(
        path, tensors, {"type": "gatescope.SequenceModel", "model": model.config.to_dict()}
    )
    with pytest.raises(CheckpointError, match="float32"):
        load_model(path)


def test_garbage_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_model(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- input encodings

V, E = 5, 3


def id_batch(rng: np.random.Generator) -> Batch:
    x = rng.integers(0, V, size=(B, T))
    x[0, :2] = 1  # an id read twice: its embedding row gets both gradients
    return Batch(x=x, y=rng.integers(0, C, size=(B, T)))


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_embedding_gradient_matches_central_differences(arch):
    rng = np.random.default_rng(3)
    model = SequenceModel.build(
        arch, V, H, C, "classify_steps", num_layers=2, encoding="embedding", embed_size=E, seed=4
    )
    assert (
        model.params["embed.weight"].shape == (V, E) and model.embed is model.params["embed.weight"]
    )
    batch = id_batch(rng)
    state0 = model.state_from_arrays(
        {n: rng.normal(size=(2, B, H)) for n in model.recurrent.state_names}
    )

    def loss() -> float:
        return model.loss(model.forward(batch.x, state0), batch)[0]

    out = model.forward(batch.x, state0)
    de = model.backward(model.loss(out, batch)[1])
    assert de.shape == (B, T, E)
    for name in ("embed.weight", "rnn.weight_ih_l0", "head.weight"):
        numeric = central_difference(loss, model.params[name])
        assert rel_error(model.grads[name], numeric) < 1e-7, name
    unused = sorted(set(range(V)) - set(batch.x.ravel().tolist()))
    assert all((model.grads["embed.weight"][v] == 0).all() for v in unused)


def test_one_hot_input_equals_a_dense_model_on_one_hot_rows():
    rng = np.random.default_rng(5)
    model = SequenceModel.build("lstm", V, H, C, "classify_steps", encoding="one_hot", seed=1)
    x = rng.integers(0, V, size=(B, T))
    dense = model.as_dense()
    assert dense.config.encoding == "dense" and dense.config.input_size == V
    np.testing.assert_array_equal(model.encode(x), np.eye(V)[x])
    np.testing.assert_array_equal(model.forward(x), dense.forward(np.eye(V)[x]))
    emb = SequenceModel.build(
        "gru", V, H, C, "classify_steps", encoding="embedding", embed_size=E, seed=1
    )
    np.testing.assert_array_equal(emb.encode(x), emb.params["embed.weight"][x])
    np.testing.assert_array_equal(emb.forward(x), emb.as_dense().forward(emb.encode(x)))
    assert "embed.weight" not in emb.as_dense().params


def test_the_final_state_carries_a_sequence_on():
    rng = np.random.default_rng(6)
    model = SequenceModel.build("lstm", V, H, C, "classify_steps", num_layers=2, encoding="one_hot")
    x = rng.integers(0, V, size=(B, 2 * T))
    whole = model.forward(x)
    first = model.forward(x[:, :T])
    second = model.forward(x[:, T:], model.final_state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-12)
    arrays = model.state_arrays(model.final_state)
    assert set(arrays) == {"h", "c"} and arrays["h"].shape == (2, B, H)
    back = model.state_from_arrays(arrays)
    for a, b in zip(back, model.final_state):
        np.testing.assert_array_equal(a, b)
    zero = model.state_arrays(model.zero_state(B))
    assert not zero["c"].any()


@pytest.mark.parametrize(
    ("kw", "x", "match"),
    [
        ({"encoding": "one_hot"}, np.zeros((B, T, V)), "int ids"),
        ({"encoding": "one_hot"}, np.full((B, T), V), r"lie in \[0, 5\)"),
        ({"encoding": "embedding", "embed_size": E}, np.full((B, T), -1), "lie in"),
    ],
)
def test_bad_ids_raise_value_error(kw, x, match):
    model = SequenceModel.build("rnn", V, H, C, "classify_steps", **kw)
    with pytest.raises(ValueError, match=match):
        model.forward(x)


def test_encoding_options_are_validated():
    with pytest.raises(ValueError, match="encoding must be one of"):
        SequenceModel.build("rnn", V, H, C, "classify_steps", encoding="bytes")
    with pytest.raises(ValueError, match="embed_size must be a positive integer"):
        SequenceModel.build("rnn", V, H, C, "classify_steps", encoding="embedding")
    with pytest.raises(ValueError, match="embed_size applies to encoding 'embedding' only"):
        SequenceModel.build("rnn", V, H, C, "classify_steps", embed_size=3)


def test_a_config_dict_without_encoding_is_dense():
    old = {  # what gatescope 0.1.0 wrote
        "arch": "gru", "input_size": 2, "hidden_size": 4, "output_size": 1,
        "kind": "regress_last", "num_layers": 1, "dtype": "float32", "head_bias": True,
        "layer_options": {"update_bias": 1.0},
    }  # fmt: skip
    config = ModelConfig.from_dict(old)
    assert config.encoding == "dense" and config.embed_size is None
    assert config.to_dict() == {**old, "encoding": "dense", "embed_size": None}
    emb = ModelConfig.from_dict({**old, "encoding": "embedding", "embed_size": 3, "input_size": 7})
    assert emb.recurrent_config().input_size == 3 and ModelConfig.from_dict(emb.to_dict()) == emb


def test_embedding_model_file_round_trip_with_carry(tmp_path):
    model = SequenceModel.build(
        "lstm", V, H, C, "classify_steps", encoding="embedding", embed_size=E, seed=9
    )
    carry = {f"carry.{k}": v for k, v in model.state_arrays(model.zero_state(2)).items()}
    save_model(tmp_path / "m.st", model, {"step": 1}, carry)
    again, meta, extra = read_model_file(tmp_path / "m.st")
    assert sorted(extra) == ["carry.c", "carry.h"] and meta["model"]["encoding"] == "embedding"
    np.testing.assert_array_equal(again.params["embed.weight"], model.params["embed.weight"])
