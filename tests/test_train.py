"""The fit loop: learning, determinism, exact resume, early stop, divergence, checkpoints."""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest

from gatescope.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gatescope.model import SequenceModel, load_model
from gatescope.tasks import get_task
from gatescope.train import (
    TrainConfig,
    evaluate_model,
    fit,
    heldout_batch,
    resume_state,
)

QUICK = {"eval_every": 5, "eval_size": 16, "checkpoint_every": 0, "batch_size": 4}


def tiny(task_name="adding", length=6, arch="lstm", hidden=6, dtype="float64", seed=0, **task_kw):
    task = get_task(task_name, length, **task_kw)
    return task, SequenceModel.for_task(task, arch, hidden, seed=seed, dtype=dtype)


def params_of(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype
        assert np.array_equal(a[k], b[k]), k  # bit for bit, not approximately


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"steps": 0}, "steps"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"clip_norm": -1.0}, "clip_norm"),
        ({"eval_every": 0}, "eval_every"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"momentum": 0.9}, "momentum"),  # adam has no momentum knob
        ({"steps": True}, "steps"),
    ],
)
def test_bad_train_config_names_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_train_config_round_trip():
    config = TrainConfig(optimizer="SGD", momentum=0.9, clip_norm=None, clip_value=0.5)
    assert config.optimizer == "sgd"
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"stepz": 3})


def test_fit_refuses_a_model_that_does_not_fit_the_task():
    task = get_task("adding", 5)
    model = SequenceModel.build("lstm", 8, 4, 8, "classify_last")
    with pytest.raises(ValueError, match="does not fit"):
        fit(task, model, TrainConfig(steps=1), progress=False)


# ----------------------------------------------------------------------------- learning


def test_a_short_run_measurably_lowers_the_loss():
    task, model = tiny("adding", 6, hidden=8)
    before = evaluate_model(task, model, n=200)["mse"]
    result = fit(
        task, model, TrainConfig(steps=60, lr=1e-2, batch_size=16, eval_every=20), progress=False
    )
    after = evaluate_model(task, model, n=200)["mse"]
    assert after < 0.5 * before
    assert [h["step"] for h in result.history] == [20, 40, 60]
    assert result.history[-1]["mse"] < result.history[0]["mse"]
    assert result.stop_reason == "steps" and result.steps == 60
    assert set(result.metrics) >= {"mse"} and result.loss is not None


def test_fit_is_deterministic_for_a_seed():
    runs = []
    for _ in range(2):
        task, model = tiny("copy", 3, arch="gru", n_copy=2, n_symbols=3)
        r = fit(task, model, TrainConfig(steps=8, **QUICK), progress=False)
        runs.append((params_of(model), [h["loss"] for h in r.history]))
    assert_identical(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    task, model = tiny("copy", 3, arch="gru", n_copy=2, n_symbols=3)
    fit(task, model, TrainConfig(steps=8, seed=1, **QUICK), progress=False)
    assert not np.array_equal(model.params["head.weight"], runs[0][0]["head.weight"])


def test_heldout_set_is_fixed_and_independent_of_the_training_seed():
    task = get_task("recall", 5)
    a, b = heldout_batch(task, 8, seed=1), heldout_batch(task, 8, seed=1)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(heldout_batch(task, 8, seed=2).x, a.x)


def test_early_stop_when_solved():
    task, model = tiny("recall", 1, hidden=8)  # the symbol is on the last step: trivial
    config = TrainConfig(steps=2000, lr=3e-2, batch_size=16, eval_every=10, eval_size=200)
    result = fit(task, model, config, progress=False)
    assert result.stop_reason == "solved" and result.solved
    assert result.steps < 2000 and result.steps % 10 == 0
    assert result.metrics["accuracy"] >= 0.99


def test_early_stop_can_wait_for_several_solved_evaluations_in_a_row():
    runs = {}
    for k in (1, 3):
        task, model = tiny("recall", 1, hidden=8)
        config = TrainConfig(
            steps=2000, lr=3e-2, batch_size=16, eval_every=10, eval_size=200, solved_evals=k
        )
        runs[k] = fit(task, model, config, progress=False)
    first, wait = runs[1], runs[3]
    assert first.stop_reason == wait.stop_reason == "solved"
    solved = [task.solved(row) for row in wait.history]
    assert solved[-3:] == [True] * 3  # it stopped at the third solved evaluation in a row
    assert not any(all(solved[i : i + 3]) for i in range(len(solved) - 3))  # and not before
    assert wait.steps >= first.steps + 20  # the same run, two evaluations longer at least
    with pytest.raises(ValueError, match="solved_evals"):
        TrainConfig(solved_evals=0)


def test_patience_stops_a_run_that_does_not_improve():
    task, model = tiny("recall", 4)
    config = TrainConfig(steps=100, lr=1e-12, patience=2, **QUICK)  # too small to change argmax
    result = fit(task, model, config, progress=False)
    assert result.stop_reason == "patience"
    assert result.steps == 15  # evaluations at 5 (best), 10 and 15 (no better)


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "optimizer, extra",
    [("adam", {}), ("sgd", {"momentum": 0.9, "clip_norm": None, "clip_value": 0.5})],
)
def test_half_run_resumed_equals_straight_run_bit_for_bit(tmp_path, optimizer, extra):
    # eval_every does not divide the half point, checkpoints fall off it too, patience is on
    config = TrainConfig(
        steps=14,
        optimizer=optimizer,
        lr=1e-2,
        batch_size=4,
        eval_every=4,
        eval_size=8,
        checkpoint_every=3,
        patience=50,
        **extra,
    )
    task, model = tiny("adding", 6, dtype="float32")
    straight = fit(task, model, config, checkpoint_path=tmp_path / "straight", progress=False)
    expected = params_of(model)

    task, model = tiny("adding", 6, dtype="float32")
    fit(task, model, dataclasses.replace(config, steps=7), tmp_path / "half", progress=False)
    task2, model2, config2, state = resume_state(tmp_path / "half", steps=14)
    assert state.step == 7 and config2 == config and task2 == task
    resumed = fit(task2, model2, config2, tmp_path / "half", progress=False, state=state)

    assert_identical(params_of(model2), expected)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in straight.history]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a, _ = load_checkpoint(tmp_path / "straight")
    b, _ = load_checkpoint(tmp_path / "half")
    assert_identical(a, b)  # weights and optimizer state
    assert resumed.steps == straight.steps == 14


def test_checkpoint_metadata_holds_what_a_resume_needs(tmp_path):
    task, model = tiny("order", 12, arch="rnn", relevant=2)
    config = TrainConfig(steps=6, seed=5, **{**QUICK, "checkpoint_every": 2})
    fit(task, model, config, checkpoint_path=tmp_path / "c", progress=False)
    loaded, meta = load_model(tmp_path / "c")
    assert meta["task"] == task.to_dict() and meta["train"] == config.to_dict()
    assert meta["step"] == 6 and meta["seed"] == 5 and meta["optimizer"]["name"] == "adam"
    assert meta["rng"]["train"]["bit_generator"] == "PCG64"
    assert meta["gatescope_version"] and meta["model"]["arch"] == "rnn"
    assert meta["history"][0]["step"] == 5 and "accuracy" in meta["metrics"]
    tensors, _ = load_checkpoint(tmp_path / "c")
    assert "optim.adam.m.rnn.weight_hh_l0" in tensors and tensors["optim.adam.step"][0] == 6
    assert_identical(params_of(loaded), params_of(model))


def test_resume_of_a_solved_run_does_nothing(tmp_path):
    task, model = tiny("recall", 1, hidden=8)
    config = TrainConfig(steps=2000, lr=3e-2, batch_size=16, eval_every=10, eval_size=200)
    first = fit(task, model, config, checkpoint_path=tmp_path / "s", progress=False)
    assert first.stop_reason == "solved"
    task, model, config, state = resume_state(tmp_path / "s", steps=5000)
    again = fit(task, model, config, checkpoint_path=tmp_path / "s", progress=False, state=state)
    assert again.steps == first.steps and again.stop_reason == "solved"
    assert "nothing to do" in again.message


def test_resume_from_a_plain_model_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "plain"
    save_checkpoint(path, {"w": np.zeros(1)}, {"hello": 1})
    with pytest.raises(CheckpointError, match="plain"):
        resume_state(path)
    task, model = tiny()
    from gatescope.model import save_model

    save_model(path, model, {"step": 3})  # a model file without training state
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        resume_state(path)


# ----------------------------------------------------------------------------- divergence


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    task, model = tiny("adding", 6, hidden=4)
    path = tmp_path / "run.safetensors"
    config = TrainConfig(
        steps=200, optimizer="sgd", lr=1e12, clip_norm=None, **{**QUICK, "checkpoint_every": 1}
    )
    result = fit(task, model, config, checkpoint_path=path, progress=False)
    assert result.stop_reason == "diverged" and not result.solved
    assert f"diverged at step {result.steps + 1}" in result.message
    assert "lower learning rate" in result.message and "clipping" in result.message
    assert str(path) in result.message
    saved, meta = load_model(path)  # the last good one: finite, one step before
    assert meta["step"] == result.steps
    assert all(np.isfinite(p).all() for p in saved.params.values())


def test_divergence_before_any_checkpoint_writes_nothing(tmp_path):
    task, model = tiny("adding", 6, hidden=4)
    path = tmp_path / "run.safetensors"
    config = TrainConfig(steps=200, optimizer="sgd", lr=1e12, clip_norm=None, **QUICK)
    result = fit(task, model, config, checkpoint_path=path, progress=False)
    assert result.stop_reason == "diverged" and result.checkpoint_path is None
    assert "no checkpoint had been written" in result.message
    assert not path.exists()


def test_missing_checkpoint_folder_fails_before_training(tmp_path):
    task, model = tiny()
    with pytest.raises(CheckpointError, match="does not exist"):
        fit(task, model, TrainConfig(steps=1), tmp_path / "no" / "c", progress=False)


# ----------------------------------------------------------------------------- display


def test_progress_bar_and_log_lines(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    lines = []
    task, model = tiny("recall", 3)
    result = fit(task, model, TrainConfig(steps=10, **QUICK), progress=True, log=lines.append)
    assert result.steps == 10
    lines.clear()
    fit(task, model, TrainConfig(steps=10, **QUICK), progress=False, log=lines.append)
    assert [line.split(":")[0] for line in lines] == ["step 5", "step 10"]
    assert "accuracy" in lines[0] and "baseline" in lines[0]


def test_the_progress_helper_draws_only_on_a_terminal(monkeypatch, capsys):
    from gatescope.progress import Progress

    got = []
    with Progress("x", 3, fallback=got.append) as bar:  # pytest's stderr is no terminal
        assert not bar.enabled
        bar.update(1, info="a")
        bar.print("line")
    assert got == ["line"] and capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    for unit, total in (("steps", 3), ("seconds", 2.5)):
        with Progress("x", total, unit=unit, fallback=got.append) as bar:
            assert bar.enabled
            bar.update(2, info="half")
            bar.print(f"above the {unit} bar")
        assert f"above the {unit} bar" in capsys.readouterr().err
    assert got == ["line"]  # on a terminal the lines go above the bar, not to the fallback
    with Progress("x", 3, enabled=False) as bar:
        assert not bar.enabled
    with pytest.raises(ValueError, match="unit must be one of"):
        Progress("x", 1, unit="hours")


def test_evaluate_model_validates_n():
    task, model = tiny()
    assert set(evaluate_model(task, model, n=5)) == {"mse", "mae"}
    with pytest.raises(ValueError, match="n must"):
        evaluate_model(task, model, n=0)


def test_time_limit_stops_after_a_step_and_the_run_resumes(tmp_path):
    task, model = tiny("recall", 3)
    config = TrainConfig(steps=50, **QUICK)
    result = fit(task, model, config, tmp_path / "t", progress=False, time_limit=1e-9)
    assert result.stop_reason == "time" and result.steps == 1
    task, model, config, state = resume_state(tmp_path / "t")
    assert state.step == 1 and state.stop_reason is None
    assert fit(task, model, config, tmp_path / "t", progress=False, state=state).steps == 50
    with pytest.raises(ValueError, match="time_limit"):
        fit(task, model, config, progress=False, time_limit=0)
