"""The LSTM variants' batch split (`gatescope.nn.parallel` in `lstm_variants.py`): rows over
threads, the same results.

The forward kernels (and layer norm's normalisation of the input projections) run on blocks
of the batch's rows, each row's work that of one call over every row: outputs, final states
and every trace entry are the same bits at 1, 2 and 3 threads. Backward runs each block
through every chunk on its own and sums the blocks' parts of the parameter gradients in
block order, and dx is a BLAS product over a block's rows: those within
`backend.TOLERANCE` of the one-thread results (and the same bits run to run at one thread
count). Every result also within the tolerance of tests/test_variant_kernels.py of the
NumPy reference. Every split is forced (MIN_WORK = 0), at batch sizes that split unevenly
(B = 8 is one block of MIN_ROWS = 8: not split).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_backends import inputs, needs_numba, run
from test_variant_kernels import CASES, assert_backends_agree, case_id, perturbed

import gatescope as gs
from gatescope.nn import backend, parallel

T, D, H = 13, 5, 40  # 13 steps: backward in chunks (of 1 to 4 steps at these B), one short


@pytest.fixture
def split_always(monkeypatch):
    """Every call split (no work threshold); threads restored afterwards."""
    monkeypatch.setattr(parallel, "MIN_WORK", 0)
    old = parallel.threads()
    yield monkeypatch
    parallel.set_threads(old)


def _layer(case, dtype, B):
    variant, opts = case
    return perturbed(gs.LSTM(D, H, 2, dtype=dtype, seed=1, variant=variant, **opts), B)


def _at(threads, layer, x, args, monkeypatch):
    parallel.set_threads(threads)
    return run(layer, x, *args, "numba", monkeypatch)


@needs_numba
@pytest.mark.parametrize("min_rows", [8, 3])
def test_the_batch_sizes_split(min_rows, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ROWS", min_rows)
    blocks = {
        (B, n): parallel.row_blocks(B, parallel.MIN_WORK, n) for B in (8, 17, 24) for n in (2, 3)
    }
    if min_rows == 8:
        assert blocks[8, 2] == blocks[8, 3] == [(0, 8)]
        assert blocks[17, 2] == blocks[17, 3] == [(0, 8), (8, 17)]  # uneven
        assert blocks[24, 3] == [(0, 8), (8, 16), (16, 24)]
    else:  # partial tiles at the boundaries
        assert blocks[17, 3] == [(0, 6), (6, 12), (12, 17)]
        assert all(len(b) > 1 for b in blocks.values())


@needs_numba
@pytest.mark.parametrize("min_rows", [8, 3])
@pytest.mark.parametrize("B", [8, 17, 24])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_split_gives_the_one_thread_results(split_always, case, dtype, B, min_rows):
    monkeypatch = split_always
    monkeypatch.setattr(parallel, "MIN_ROWS", min_rows)
    rng = np.random.default_rng(B)
    layer = _layer(case, dtype, B)
    x = rng.normal(size=(B, T, D)).astype(dtype)
    args = inputs(layer, x, rng)
    one = _at(1, layer, x, args, monkeypatch)
    tol = backend.TOLERANCE[np.dtype(dtype)]
    for n in (2, 3):
        got = _at(n, layer, x, args, monkeypatch)
        assert got.keys() == one.keys()
        for k, ref in one.items():
            if k == "dx" or k.startswith("grad "):
                # dx: BLAS over fewer rows may sum in another order; the parameters: the
                # blocks' parts summed. Within the tolerance
                err = np.max(np.abs(got[k].astype(np.float64) - ref))
                assert err <= tol * np.max(np.abs(ref)), (n, k, err)
            else:  # y, final states, trace, dL/d(state0): rows are independent
                np.testing.assert_array_equal(got[k], ref, err_msg=f"{n} threads: {k}")
        again = _at(n, layer, x, args, monkeypatch)  # the same bits run to run
        for k in one:
            assert got[k].tobytes() == again[k].tobytes(), (n, k)


@needs_numba
@pytest.mark.parametrize("B", [17, 24])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_split_matches_the_reference(split_always, case, dtype, B):
    """At 2 and 3 threads, every output, trace entry and gradient within the tolerance of
    the NumPy reference (tests/test_variant_kernels.py's measure)."""
    monkeypatch = split_always
    monkeypatch.setattr(parallel, "MIN_ROWS", 3)  # more blocks, partial tiles
    rng = np.random.default_rng(B + 1)
    layer = _layer(case, dtype, B)
    x = rng.normal(size=(B, T, D)).astype(dtype)
    for n in (2, 3):
        parallel.set_threads(n)
        assert len(parallel.row_blocks(B, 0, n)) == n
        assert_backends_agree(layer, x, np.random.default_rng(n), monkeypatch)
