"""The batch split (`gatescope.nn.parallel`): rows over threads, the same results.

A kernel run on blocks of the batch's rows does each row's work as one call over every row
does, so outputs, final states, the trace and dL/d(state0) are the same bits at any thread
count. dL/dx is a BLAS product over a block's rows (BLAS may sum in another order for
another row count), and the weight gradients are each block's part summed in block order:
the same values within `backend.TOLERANCE`, and the same bits run to run at one thread
count.
Every split is forced here (MIN_WORK = 0, MIN_ROWS = 3), at batch sizes that split unevenly.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import gatescope as gs
from gatescope.nn import backend, parallel

LAYERS = {
    "lstm": lambda D, H, dt: gs.LSTM(D, H, dtype=dt, seed=1),
    "lstm-2": lambda D, H, dt: gs.LSTM(D, H, num_layers=2, dtype=dt, seed=1),
    "gru": lambda D, H, dt: gs.GRU(D, H, dtype=dt, seed=1),
    "gru-reset-after": lambda D, H, dt: gs.GRU(D, H, reset_after=True, dtype=dt, seed=1),
    "rnn-tanh": lambda D, H, dt: gs.RNN(D, H, dtype=dt, seed=1),
    "rnn-relu": lambda D, H, dt: gs.RNN(D, H, nonlinearity="relu", dtype=dt, seed=1),
}


@pytest.fixture
def split_always(monkeypatch):
    """Every call split (no work threshold, blocks of 3 rows and up: partial tiles at every
    boundary); threads restored afterwards."""
    monkeypatch.setattr(parallel, "MIN_WORK", 0)
    monkeypatch.setattr(parallel, "MIN_ROWS", 3)
    old = parallel.threads()
    yield
    parallel.set_threads(old)


def _run(layer, x, dy, threads):
    parallel.set_threads(threads)
    y, state = layer(x)
    trace = {k: v.copy() for k, v in layer.trace.items()}
    dx = layer.backward(dy)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    return y, state, trace, dx, layer.dstate0, grads


def _flat(state):
    return [np.asarray(s) for s in (state if isinstance(state, tuple) else (state,))]


@pytest.mark.skipif(backend.backend() != "numba", reason="the split is the kernels'")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [7, 17, 24])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_split_gives_the_one_thread_results(split_always, name, B, dtype):
    T, D, H = 13, 5, 40  # 13 steps: backward in chunks, the last one short
    layer = LAYERS[name](D, H, dtype)
    rng = np.random.default_rng(B)
    for p in layer.params.values():
        p += rng.normal(0, 0.1, p.shape).astype(dtype)  # off the initial values
    x = rng.normal(0, 1, (B, T, D)).astype(dtype)
    dy = rng.normal(0, 1, (B, T, H)).astype(dtype)
    one = _run(layer, x, dy, 1)
    tol = backend.TOLERANCE[np.dtype(dtype)]
    for n in (2, 3):
        assert len(parallel.row_blocks(B, 1.0, n)) > 1
        y, state, trace, dx, dstate0, grads = _run(layer, x, dy, n)
        # rows are independent: the same bits
        np.testing.assert_array_equal(y, one[0])
        for a, b in zip(_flat(state), _flat(one[1]), strict=True):
            np.testing.assert_array_equal(a, b)
        for k in trace:
            np.testing.assert_array_equal(trace[k], one[2][k], err_msg=k)
        for a, b in zip(_flat(dstate0), _flat(one[4]), strict=True):
            np.testing.assert_array_equal(a, b)
        # dx: BLAS over fewer rows may sum in another order; the weight gradients: the
        # blocks' parts summed. Both within the tolerance
        assert np.max(np.abs(dx - one[3])) <= tol * np.max(np.abs(one[3]))
        for k, g in grads.items():
            ref = one[5][k]
            assert np.max(np.abs(g - ref)) <= tol * np.max(np.abs(ref)), k
        # and the same bits run to run at this thread count
        again = _run(layer, x, dy, n)
        for k, g in grads.items():
            np.testing.assert_array_equal(g, again[5][k], err_msg=k)


@pytest.mark.parametrize("rows, n", [(64, 2), (17, 2), (24, 3), (100, 3), (9, 2), (1, 4)])
def test_row_blocks_cover_the_rows_in_whole_tiles(rows, n):
    blocks = parallel.row_blocks(rows, parallel.MIN_WORK, n)
    assert blocks[0][0] == 0 and blocks[-1][1] == rows
    assert all(b1 == c0 for (_, b1), (c0, _) in zip(blocks, blocks[1:]))
    assert len(blocks) <= max(1, min(n, rows // parallel.MIN_ROWS))
    if len(blocks) > 1:
        assert all(b0 % parallel.MIN_ROWS == 0 for b0, _ in blocks)
        assert all(b1 - b0 >= parallel.MIN_ROWS for b0, b1 in blocks)


def test_small_calls_are_not_split():
    assert parallel.row_blocks(64, parallel.MIN_WORK - 1, 2) == [(0, 64)]
    assert parallel.row_blocks(64, parallel.MIN_WORK, 2) == [(0, 32), (32, 64)]
    assert parallel.row_blocks(15, parallel.MIN_WORK, 2) == [(0, 15)]  # one tile's rows each


def test_matmul_is_numpys(split_always):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(37, 19)), rng.normal(size=(19, 23))
    for n in (1, 2, 3):
        parallel.set_threads(n)
        out = np.empty((37, 23))
        assert parallel.matmul(a, b, out) is out
        np.testing.assert_allclose(out, a @ b, rtol=1e-13, atol=1e-13)
        parallel.matmul(a.T.copy().T, b, out)  # a strided view of rows
        np.testing.assert_allclose(out, a @ b, rtol=1e-13, atol=1e-13)


def test_run_blocks_raises_a_blocks_error_and_runs_on_threads(split_always):
    parallel.set_threads(2)
    names = []

    def fn(b0, b1):
        names.append(threading.current_thread().name)
        if b0 > 0:
            raise ValueError(f"block {b0}:{b1}")
        return b1 - b0

    with pytest.raises(ValueError, match="block 9:18"):
        parallel.run_blocks(fn, 18, 1.0)
    assert len(set(names)) == 2
    assert parallel.run_blocks(lambda b0, b1: (b0, b1), 18, 1.0) == [(0, 9), (9, 18)]


def test_set_threads_checks_and_returns_the_old_count():
    old = parallel.threads()
    try:
        assert parallel.set_threads(3) == old
        assert parallel.threads() == 3
        with pytest.raises(ValueError, match="threads"):
            parallel.set_threads(0)
    finally:
        parallel.set_threads(old)


def test_limit_blas_threads_sets_the_split_too():
    from gatescope.threads import limit_blas_threads

    old = parallel.threads()
    with limit_blas_threads(1):
        assert parallel.threads() == 1
    assert parallel.threads() == old
