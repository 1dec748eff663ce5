"""The batch split: a sequence kernel's rows over threads, with no step-by-step sync.

The rows of a batch are independent through a whole forward pass and a chunk of backward's
steps (each product entry is summed in order of k, each element-wise value is its own), so
a kernel called on rows [b0, b1) of the arrays of a sequence does exactly the work those
rows need, and nothing that the other rows' calls do. `run_rows` calls a kernel once per
block of rows, each block on its own thread: the kernels are compiled with nogil, so the
threads run at once, and each writes its rows only. Outputs, states and the trace are then
the same bits as one call over every row, at any thread count; backward's dL/dx and weight
gradients (BLAS over a block's rows, the blocks' parts summed in block order) agree within
the backends' tolerance and give the same bits run to run (tests/test_parallel.py).

The blocks are the rows of the arrays themselves (`hs[t, b0:b1]` inside the kernel: rows
of a C-contiguous block, which the compiler vectorises), not (T, B/2, .) views of them,
whose strided layout it does not (benchmarks/NOTES.md, step 17).

The products around the kernels (the input projections, backward's dx and weight gradients,
the output head's) go through `matmul`, which splits a large one the same way: rows of the
output over the threads, each block one BLAS call with BLAS on one thread. BLAS's own
threads would not do: OpenBLAS's threads spin for about 0.1 s after each call they share
(measured: benchmarks/NOTES.md, step 18), and a split kernel started in that time shares
its cores with them.

Threads: `threads()`, set by `set_threads(n)` (gatescope.threads.limit_blas_threads sets
it with BLAS's); by default every core this process may run on, as NumPy's BLAS and
PyTorch do. A call is split only when each block gets at least `MIN_ROWS` rows and the call
at least `MIN_WORK` multiply-adds: below that, handing work to a thread costs more than it
saves.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .checks import check_positive_int

# a block's rows, at least: a whole register tile of the recurrent product (kernels_numba.MR)
MIN_ROWS = 8
# multiply-adds of one call, at least, before it is split (measured: benchmarks/NOTES.md,
# step 18; a thread's start and join cost some tens of microseconds)
MIN_WORK = 20_000_000


def all_cores() -> int:
    """The cores this process may run on (its affinity mask; else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_threads = all_cores()
_pool: ThreadPoolExecutor | None = None


def threads() -> int:
    """How many threads a sequence kernel's rows may be split over."""
    return _threads


def set_threads(n: int) -> int:
    """Split the sequence kernels' rows over at most `n` threads; returns the old count."""
    global _threads
    old, _threads = _threads, check_positive_int("threads", n)
    return old


def row_blocks(rows: int, work: float, n: int | None = None) -> list[tuple[int, int]]:
    """The blocks [b0, b1) of `rows` for a call of `work` multiply-adds over `n` threads
    (default `threads()`): as equal as whole tiles allow, at least MIN_ROWS rows each."""
    n = min(threads() if n is None else n, rows // MIN_ROWS)
    if n < 2 or work < MIN_WORK:
        return [(0, rows)]
    # boundaries on multiples of MIN_ROWS, so that only the last block has a partial tile
    tiles = -(-rows // MIN_ROWS)
    cuts = [min(rows, (tiles * k // n) * MIN_ROWS) for k in range(n + 1)]
    return [(b0, b1) for b0, b1 in zip(cuts, cuts[1:]) if b1 > b0]


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers < _threads - 1:
        _pool = ThreadPoolExecutor(max_workers=max(1, _threads - 1), thread_name_prefix="rows")
    return _pool


def _forget_pool() -> None:
    """A forked child has no threads: it starts its own pool when it needs one."""
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_blocks(fn: Callable, rows: int, work: float) -> list:
    """[fn(b0, b1) for each block of `row_blocks(rows, work)`], the first block on this thread,
    the others on the pool's, BLAS on one thread while there is more than one block. For a
    whole pass over a block of rows (backward's chunks, each chunk's products): no sync
    until the end. `fn` must not call `run_rows`, `run_blocks` or `matmul` (the pool's
    threads are its blocks)."""
    blocks = row_blocks(rows, work)
    if len(blocks) == 1:
        return [fn(0, rows)]
    with _blas_on_one_thread():
        futures = [_executor().submit(fn, b0, b1) for b0, b1 in blocks[1:]]
        try:
            first = fn(*blocks[0])
        finally:
            rest = [f.result() for f in futures]
    return [first, *rest]


def sum_blocks(parts: list) -> tuple:
    """The blocks' parts of `run_blocks` (each a tuple of arrays, or None where a part is
    absent) summed in block order into the first block's arrays, which are returned."""
    total = parts[0]
    for part in parts[1:]:
        for g, p in zip(total, part, strict=True):
            if g is not None:
                g += p
    return total


def matmul_block(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out (n, rows, N) = (a (n rows, K) @ b (K, N)) for `out` a block of a batch's rows
    (x[:, b0:b1]-like, not contiguous: the product is written back) or a whole array."""
    if out.flags.c_contiguous:
        np.matmul(a, b, out=out.reshape(a.shape[0], -1))
    else:
        out[...] = np.matmul(a, b).reshape(out.shape)


def run_rows(kernel: Callable, rows: int, work: float, *args) -> None:
    """`kernel(*args, b0, b1)` for each block of `row_blocks(rows, work)`: the first on this
    thread, the others on the pool's, all finished (and their errors raised) on return."""
    blocks = row_blocks(rows, work)
    if len(blocks) == 1:
        kernel(*args, 0, rows)
        return
    futures = [_executor().submit(kernel, *args, b0, b1) for b0, b1 in blocks[1:]]
    try:
        kernel(*args, *blocks[0])
    finally:
        for f in futures:
            f.result()


@functools.cache
def _blas_libraries() -> tuple:
    """threadpoolctl's controllers of the BLAS libraries loaded (found once: it scans them)."""
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


@contextlib.contextmanager
def _blas_on_one_thread() -> Iterator[None]:
    """BLAS on one thread inside the block (a microsecond to set and to restore)."""
    libs = [(lib, lib.get_num_threads()) for lib in _blas_libraries()]
    for lib, n in libs:
        if n != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in libs:
            if n != 1:
                lib.set_num_threads(n)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out (M, N) = a (M, K) @ b (K, N), np.matmul's result. With more than one thread, BLAS
    runs on one (its own threads never start) and a large enough product is split: the rows
    of `out` in blocks over the threads, each block one BLAS call. Returns out."""
    if threads() == 1:
        return np.matmul(a, b, out=out)
    blocks = row_blocks(a.shape[0], a.shape[0] * a.shape[1] * b.shape[1])
    with _blas_on_one_thread():
        if len(blocks) == 1:
            return np.matmul(a, b, out=out)
        futures = [
            _executor().submit(np.matmul, a[r0:r1], b, out=out[r0:r1]) for r0, r1 in blocks[1:]
        ]
        try:
            r0, r1 = blocks[0]
            np.matmul(a[r0:r1], b, out=out[r0:r1])
        finally:
            for f in futures:
                f.result()
    return out
