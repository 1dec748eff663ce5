"""Tests of gatescope.tasks: data layout, targets, determinism, baselines, metrics, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatescope.tasks import (
    KINDS,
    TASKS,
    AddingTask,
    Batch,
    CopyTask,
    OrderTask,
    RecallTask,
    get_task,
    task_from_dict,
)
from gatescope.tasks.base import log_softmax
from gatescope.tasks.order import DISTRACTORS, END, START, SYM_X, SYM_Y, min_order_length

NAMES = ("recall", "adding", "copy", "order")
SETTINGS = settings(deadline=None, max_examples=40)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def perfect_outputs(task, batch: Batch) -> np.ndarray:
    """Outputs that a perfect model would give: one-hot logits scaled up, or the targets."""
    if task.kind == "regress_last":
        return batch.y.astype(np.float64)
    return 50.0 * np.eye(task.output_size)[batch.y]  # (B, C) or (B, T, C)


# ----- registry and construction ---------------------------------------------------------------


def test_registry_names_and_classes():
    assert set(TASKS) == set(NAMES)
    assert TASKS["recall"] is RecallTask and TASKS["adding"] is AddingTask
    assert TASKS["copy"] is CopyTask and TASKS["order"] is OrderTask
    with pytest.raises(TypeError):
        TASKS["new"] = RecallTask  # type: ignore[index]


@pytest.mark.parametrize("name", NAMES)
def test_get_task_defaults_and_attributes(name):
    task = get_task(name)
    assert task.name == name
    assert task.kind in KINDS
    assert task.metric_name in ("accuracy", "mse", "cross_entropy")
    assert isinstance(task.baseline, float) and task.baseline > 0
    batch = task.make_batch(4, rng())
    assert batch.x.shape == (4, task.seq_len, task.input_size)
    metrics = task.evaluate(perfect_outputs(task, batch), batch)
    assert task.metric_name in metrics
    assert all(isinstance(v, float) for v in metrics.values())


def test_get_task_length_and_options():
    assert get_task("adding", 37).length == 37
    assert get_task("order", 60, relevant=3).relevant == 3
    assert get_task("recall", 5, n_symbols=3, noise_std=0.5) == RecallTask(5, 3, 0.5)
    assert get_task("copy", length=7, n_copy=3).seq_len == 7 + 6


def test_get_task_unknown_name_lists_names():
    with pytest.raises(ValueError, match="adding, copy, order, recall"):
        get_task("parity", 10)
    with pytest.raises(ValueError, match="unknown task"):
        get_task(None, 10)  # type: ignore[arg-type]


def test_get_task_unknown_option():
    with pytest.raises(ValueError, match="n_symbols"):
        get_task("adding", 10, n_symbols=3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length", [0, -3, 2.5, True, "10"])
def test_bad_length_raises_naming_length(name, length):
    with pytest.raises(ValueError, match="length"):
        get_task(name, length)


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (RecallTask, {"n_symbols": 1}, "n_symbols"),
        (RecallTask, {"noise_std": -0.1}, "noise_std"),
        (RecallTask, {"noise_std": float("nan")}, "noise_std"),
        (RecallTask, {"noise_std": "1"}, "noise_std"),
        (AddingTask, {"length": 1}, "length"),
        (CopyTask, {"n_symbols": 1}, "n_symbols"),
        (CopyTask, {"n_copy": 0}, "n_copy"),
        (OrderTask, {"relevant": 4}, "relevant"),
        (OrderTask, {"relevant": True}, "relevant"),
        (OrderTask, {"length": 4}, "length"),
        (OrderTask, {"relevant": 3, "length": 6}, "length"),
    ],
)
def test_bad_options_raise_naming_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_order_minimum_lengths_work():
    for relevant in (2, 3):
        n = min_order_length(relevant)
        OrderTask(length=n, relevant=relevant).make_batch(3, rng())
        with pytest.raises(ValueError, match="length"):
            OrderTask(length=n - 1, relevant=relevant)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, "4"])
def test_bad_batch_size(name, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        get_task(name, 10).make_batch(batch_size, rng())


def test_bad_rng():
    with pytest.raises(ValueError, match="seed"):
        get_task("adding", 10).make_batch(2, "zero")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_to_dict_round_trip_is_json_safe(name):
    task = get_task(name, 30)
    d = json.loads(json.dumps(task.to_dict()))
    assert d["name"] == name
    assert task_from_dict(d) == task
    with pytest.raises(ValueError):
        task_from_dict({"length": 3})


def test_numpy_ints_are_coerced():
    task = get_task("order", np.int64(50), relevant=np.int64(3))
    assert type(task.length) is int and type(task.relevant) is int
    json.dumps(task.to_dict())


def test_tasks_are_frozen():
    task = get_task("adding", 10)
    with pytest.raises(AttributeError):
        task.length = 20  # type: ignore[misc]


# ----- shapes, dtypes and determinism (property tests) --------------------------------------------


@SETTINGS
@given(
    name=st.sampled_from(NAMES),
    length=st.integers(min_value=7, max_value=40),
    batch_size=st.integers(min_value=1, max_value=9),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_shapes_dtypes_and_determinism(name, length, batch_size, seed):
    task = get_task(name, length)
    a = task.make_batch(batch_size, rng(seed))
    b = task.make_batch(batch_size, rng(seed))
    B, T, D = a.x.shape
    assert (B, T, D) == (batch_size, task.seq_len, task.input_size)
    assert a.x.dtype == np.float64 and np.all(np.isfinite(a.x))
    if task.kind == "classify_last":
        assert a.y.shape == (B,) and a.y.dtype == np.int64 and a.mask is None
        assert np.all((a.y >= 0) & (a.y < task.output_size))
    elif task.kind == "regress_last":
        assert a.y.shape == (B, 1) and a.y.dtype == np.float64 and a.mask is None
    else:
        assert a.y.shape == (B, T) and a.y.dtype == np.int64
        assert a.mask is not None and a.mask.shape == (B, T) and a.mask.dtype == np.bool_
        assert np.all((a.y >= 0) & (a.y < task.output_size))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    if a.mask is not None:
        assert np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("name", NAMES)
def test_different_seeds_and_successive_draws_differ(name):
    task = get_task(name, 30)
    a = task.make_batch(16, rng(0))
    b = task.make_batch(16, rng(1))
    assert not np.array_equal(a.x, b.x)
    g = rng(0)
    c, d = task.make_batch(16, g), task.make_batch(16, g)
    assert np.array_equal(c.x, a.x)  # the first draw from a fresh Generator equals `a`
    assert not np.array_equal(c.x, d.x)  # the Generator's state advances


@pytest.mark.parametrize("name", NAMES)
def test_int_seed_is_accepted_and_deterministic(name):
    task = get_task(name, 12)
    assert np.array_equal(task.make_batch(5, 3).x, task.make_batch(5, rng(3)).x)


# ----- recall -----------------------------------------------------------------------------------


@SETTINGS
@given(
    length=st.integers(min_value=1, max_value=30),
    n_symbols=st.integers(min_value=2, max_value=12),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_recall_target_is_first_symbol(length, n_symbols, seed):
    task = RecallTask(length=length, n_symbols=n_symbols)
    batch = task.make_batch(8, rng(seed))
    first = batch.x[:, 0, :]  # (B, D)
    assert np.array_equal(first, np.eye(n_symbols)[batch.y])  # exactly one-hot
    assert np.array_equal(np.argmax(first, axis=-1), batch.y)


def test_recall_noise_statistics_and_scale():
    batch = RecallTask(length=50, n_symbols=8, noise_std=1.0).make_batch(2000, rng())
    noise = batch.x[:, 1:, :]
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1.0) < 0.01
    quiet = RecallTask(length=6, noise_std=0.0).make_batch(10, rng())
    assert np.all(quiet.x[:, 1:, :] == 0.0)
    loud = RecallTask(length=50, noise_std=3.0).make_batch(500, rng())
    assert abs(loud.x[:, 1:, :].std() - 3.0) < 0.05


def test_recall_labels_uniform_and_chance():
    task = RecallTask(length=3, n_symbols=8)
    batch = task.make_batch(40_000, rng())
    freq = np.bincount(batch.y, minlength=8) / 40_000
    assert np.all(np.abs(freq - 1 / 8) < 0.01)
    const = task.evaluate(np.zeros((40_000, 8)), batch)  # ties -> always class 0
    assert abs(const["accuracy"] - task.baseline) < 0.01
    assert math.isclose(const["cross_entropy"], math.log(8), rel_tol=1e-12)
    noise = task.evaluate(rng(5).standard_normal((40_000, 8)), batch)
    assert abs(noise["accuracy"] - task.baseline) < 0.01
    assert task.baseline == 1 / 8


# ----- adding -----------------------------------------------------------------------------------


@SETTINGS
@given(
    length=st.integers(min_value=2, max_value=41),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_adding_markers_and_target(length, seed):
    batch = AddingTask(length=length).make_batch(16, rng(seed))
    values, markers = batch.x[..., 0], batch.x[..., 1]  # (B, T) each
    half = length // 2
    assert np.all((values >= 0.0) & (values < 1.0))
    assert set(np.unique(markers)) <= {0.0, 1.0}
    assert np.all(markers[:, :half].sum(axis=1) == 1)  # one marker in [0, T//2)
    assert np.all(markers[:, half:].sum(axis=1) == 1)  # one marker in [T//2, T)
    expected = (values * markers).sum(axis=1, keepdims=True)  # (B, 1)
    np.testing.assert_allclose(batch.y, expected, rtol=0, atol=1e-15)


def test_adding_marker_positions_cover_both_halves():
    batch = AddingTask(length=10).make_batch(5000, rng())
    pos = np.argwhere(batch.x[..., 1] == 1.0)[:, 1]
    assert set(pos) == set(range(10))


def test_adding_baseline_predicting_one():
    task = AddingTask(length=10)
    assert task.baseline == 1 / 6
    batch = task.make_batch(200_000, rng())
    metrics = task.evaluate(np.ones((200_000, 1)), batch)
    assert abs(metrics["mse"] - 1 / 6) < 0.003
    assert not task.solved(metrics)
    perfect = task.evaluate(batch.y, batch)
    assert perfect["mse"] == 0.0 and perfect["mae"] == 0.0 and task.solved(perfect)


def test_adding_evaluate_accepts_per_step_predictions():
    task = AddingTask(length=8)
    batch = task.make_batch(6, rng())
    per_step = np.zeros((6, 8, 1))
    per_step[:, -1, :] = batch.y
    assert task.evaluate(per_step, batch)["mse"] == 0.0
    np.testing.assert_allclose(
        task.evaluate(np.full((6, 1), 0.5), batch)["mse"], np.mean((batch.y - 0.5) ** 2)
    )


# ----- copy -------------------------------------------------------------------------------------


@SETTINGS
@given(
    length=st.integers(min_value=1, max_value=30),
    n_copy=st.integers(min_value=1, max_value=10),
    n_symbols=st.integers(min_value=2, max_value=8),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_copy_layout(length, n_copy, n_symbols, seed):
    task = CopyTask(length=length, n_symbols=n_symbols, n_copy=n_copy)
    batch = task.make_batch(8, rng(seed))
    T, N, K = length, n_copy, n_symbols
    assert task.seq_len == T + 2 * N and task.input_size == K + 2 and task.output_size == K + 1
    assert np.all(batch.x.sum(axis=-1) == 1.0)  # one-hot everywhere
    cats = np.argmax(batch.x, axis=-1)  # (B, T + 2N)
    symbols = cats[:, :N]
    assert np.all((symbols >= 1) & (symbols <= K))
    delim = N + T - 1
    assert task.delimiter_step == delim and task.delimiter == K + 1
    assert np.all(cats[:, delim] == K + 1)
    assert np.all(np.delete(cats[:, N:], delim - N, axis=1) == 0)  # blanks elsewhere
    assert np.all(batch.y[:, : T + N] == 0)
    assert np.array_equal(batch.y[:, T + N :], symbols)
    assert np.array_equal(batch.y[:, task.recall_steps], symbols)
    assert batch.mask is not None and batch.mask.all()  # the paper's loss covers all steps


def test_copy_paper_sizes():
    task = CopyTask(length=100)
    assert task.seq_len == 120 and task.input_size == 10 and task.output_size == 9
    assert math.isclose(task.baseline, 10 * math.log(8) / 120, rel_tol=1e-15)
    batch = task.make_batch(4, rng())
    assert np.all(np.argmax(batch.x, axis=-1)[:, 109] == 9)


def memoryless_logits(task: CopyTask, B: int) -> np.ndarray:
    """Blank on the first T + N steps, uniform over the K symbols on the last N."""
    logits = np.full((B, task.seq_len, task.output_size), -1e3)  # (B, T, C)
    logits[:, : task.recall_steps.start, 0] = 0.0
    logits[:, task.recall_steps, 1:] = 0.0
    return logits


def test_copy_memoryless_baseline():
    task = CopyTask(length=50)
    batch = task.make_batch(2000, rng())
    metrics = task.evaluate(memoryless_logits(task, 2000), batch)
    assert math.isclose(metrics["cross_entropy"], task.baseline, rel_tol=1e-12)
    assert abs(metrics["accuracy"] - 1 / 8) < 0.01  # argmax ties -> symbol 1, chance
    assert not task.solved(metrics)
    uniform = task.evaluate(np.zeros((2000, task.seq_len, 9)), batch)
    assert math.isclose(uniform["cross_entropy"], math.log(9), rel_tol=1e-12)


def test_copy_perfect_outputs():
    task = CopyTask(length=20)
    batch = task.make_batch(50, rng())
    metrics = task.evaluate(perfect_outputs(task, batch), batch)
    assert metrics["accuracy"] == 1.0 and metrics["sequence_accuracy"] == 1.0
    assert metrics["cross_entropy"] < 1e-15
    assert task.solved(metrics) and task.solved(metrics["cross_entropy"])


def test_copy_accuracy_counts_recall_steps_only():
    task = CopyTask(length=5, n_copy=4)
    batch = task.make_batch(10, rng())
    logits = perfect_outputs(task, batch)
    logits[:, : task.recall_steps.start] = 0.0
    logits[:, : task.recall_steps.start, 3] = 50.0  # wrong on every step before the recall
    metrics = task.evaluate(logits, batch)
    assert metrics["accuracy"] == 1.0 and metrics["sequence_accuracy"] == 1.0
    assert metrics["cross_entropy"] > task.baseline  # but the loss counts every step
    logits = perfect_outputs(task, batch)
    logits[0, -1] = 0.0
    logits[0, -1, 0] = 50.0  # one wrong symbol in sequence 0
    metrics = task.evaluate(logits, batch)
    assert metrics["accuracy"] == 1 - 1 / 40 and metrics["sequence_accuracy"] == 0.9


def test_copy_cross_entropy_respects_mask():
    task = CopyTask(length=5, n_copy=2)
    batch = task.make_batch(3, rng())
    logits = perfect_outputs(task, batch)
    logits[:, 0] = -logits[:, 0]  # step 0 wrong
    mask = batch.mask.copy()
    mask[:, 0] = False
    masked = Batch(batch.x, batch.y, mask)
    assert task.evaluate(logits, batch)["cross_entropy"] > 1.0
    assert task.evaluate(logits, masked)["cross_entropy"] < 1e-15


def test_copy_solved_thresholds():
    task = CopyTask(length=100)
    assert math.isclose(task.threshold, 0.05 * task.baseline)
    assert task.solved(0.99 * task.threshold) and not task.solved(task.threshold)
    assert task.solved({"cross_entropy": 1.0, "accuracy": 0.99})  # accuracy path
    assert not task.solved({"cross_entropy": 1.0, "accuracy": 0.98})
    assert task.solved({"cross_entropy": 0.0, "accuracy": 0.0})


# ----- order ------------------------------------------------------------------------------------


def decode_order(sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From symbol ids (B, T): positions (B, R) and labels (B,) read in plain Python."""
    positions, labels = [], []
    for row in sym:
        pos = [t for t, s in enumerate(row) if s in (SYM_X, SYM_Y)]
        label = 0
        for t in pos:
            label = 2 * label + int(row[t] == SYM_Y)
        positions.append(pos)
        labels.append(label)
    return np.array(positions), np.array(labels)


@SETTINGS
@given(
    relevant=st.sampled_from([2, 3]),
    length=st.integers(min_value=7, max_value=130),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_order_layout_and_labels(relevant, length, seed):
    task = OrderTask(length=length, relevant=relevant)
    batch = task.make_batch(12, rng(seed))
    assert np.all(batch.x.sum(axis=-1) == 1.0)
    sym = np.argmax(batch.x, axis=-1)  # (B, T)
    assert np.all(sym[:, 0] == START) and np.all(sym[:, -1] == END)
    positions, labels = decode_order(sym)
    assert positions.shape == (12, relevant)
    for k, (lo, hi) in enumerate(task.windows):
        assert np.all((positions[:, k] >= lo) & (positions[:, k] <= hi))
    assert np.array_equal(labels, batch.y)
    inner = np.isin(sym[:, 1:-1], (SYM_X, SYM_Y), invert=True)
    assert np.all(np.isin(sym[:, 1:-1][inner], DISTRACTORS))


def test_order_paper_windows_and_classes():
    assert OrderTask(length=100, relevant=2).windows == ((10, 20), (50, 60))
    assert OrderTask(length=100, relevant=3).windows == ((10, 20), (33, 43), (66, 76))
    assert OrderTask(relevant=2).class_names == ("Q", "R", "S", "U")
    assert len(OrderTask(relevant=3).class_names) == 8
    assert OrderTask(relevant=2).input_size == 8 and OrderTask(relevant=3).output_size == 8


def test_order_explicit_example():
    task = OrderTask(length=20, relevant=3)
    batch = task.make_batch(3000, rng())
    sym = np.argmax(batch.x, axis=-1)  # (B, T)
    xyx = batch.y == 2  # X, Y, X -> class 2 (S)
    assert xyx.any()
    for row in sym[xyx]:
        assert list(row[np.isin(row, (SYM_X, SYM_Y))]) == [SYM_X, SYM_Y, SYM_X]


@pytest.mark.parametrize("relevant", [2, 3])
def test_order_labels_uniform_positions_cover_windows_and_chance(relevant):
    task = OrderTask(length=100, relevant=relevant)
    batch = task.make_batch(40_000, rng())
    C = 2**relevant
    freq = np.bincount(batch.y, minlength=C) / 40_000
    assert np.all(np.abs(freq - 1 / C) < 0.01)
    assert task.baseline == 1 / C
    sym = np.argmax(batch.x[:2000], axis=-1)
    positions, _ = decode_order(sym)
    for k, (lo, hi) in enumerate(task.windows):
        assert set(positions[:, k]) == set(range(lo, hi + 1))
    const = task.evaluate(np.zeros((40_000, C)), batch)
    assert abs(const["accuracy"] - 1 / C) < 0.01
    assert math.isclose(const["cross_entropy"], math.log(C), rel_tol=1e-12)


# ----- evaluate, solved and numerics -------------------------------------------------------------


@pytest.mark.parametrize("name", ["recall", "order"])
def test_classify_last_uses_last_step_of_per_step_logits(name):
    task = get_task(name, 30)
    batch = task.make_batch(20, rng())
    per_step = np.zeros((20, task.seq_len, task.output_size))
    per_step[:, -1] = perfect_outputs(task, batch)
    per_step[:, :-1, 0] = 100.0  # earlier steps are ignored
    metrics = task.evaluate(per_step, batch)
    assert metrics["accuracy"] == 1.0 and task.solved(metrics)


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_rejects_wrong_shapes(name):
    task = get_task(name, 10)
    batch = task.make_batch(4, rng())
    good = perfect_outputs(task, batch)
    with pytest.raises(ValueError, match="outputs"):
        task.evaluate(good[:3], batch)
    with pytest.raises(ValueError, match="outputs"):
        task.evaluate(np.zeros(good.shape[:-1] + (good.shape[-1] + 1,)), batch)
    with pytest.raises(ValueError, match="outputs"):
        task.evaluate(np.zeros(4), batch)
    with pytest.raises(ValueError, match="batch"):
        task.evaluate(good, (batch.x, batch.y))


@pytest.mark.parametrize(
    "name, solved, unsolved",
    [("recall", 0.99, 0.9899), ("order", 0.99, 0.9899), ("adding", 0.0099, 0.01)],
)
def test_solved_thresholds(name, solved, unsolved):
    task = get_task(name)
    assert task.solved(solved) and not task.solved(unsolved)
    assert task.solved({task.metric_name: solved})
    assert not task.solved(task.baseline)
    with pytest.raises(ValueError, match=task.metric_name):
        task.solved({"other": 1.0})
    with pytest.raises(ValueError, match="metric"):
        task.solved(float("nan"))


def test_log_softmax_is_stable_for_large_logits():
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0]])
    out = log_softmax(z)  # RuntimeWarnings are errors under pytest's config
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.exp(out).sum(axis=-1), 1.0)
    np.testing.assert_allclose(out[1], -math.log(3))


def test_batch_validates_shapes():
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="x"):
        Batch(np.zeros((2, 3)), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="y"):
        Batch(x, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="mask"):
        Batch(x, np.zeros((2, 3), dtype=np.int64), np.ones((2, 3)))
    b = Batch(x, np.zeros((2, 3), dtype=np.int64), np.ones((2, 3), dtype=bool))
    assert b.batch_size == 2 and b.seq_len == 3
