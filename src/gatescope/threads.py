"""How many threads NumPy's BLAS and gatescope's kernels may use: the one helper every
command goes through.

The recurrent products are small (B x H by H x 4H): on a busy machine with few cores, BLAS
threads mostly wait for each other, and one thread can be several times faster (a training
step was 2-6x slower with OpenBLAS's default threads on 2 busy cores). On an idle machine
more threads may help the larger models: `benchmarks/threads.py` measures both on the
machine it runs on.

Who decides, first match wins: a command's ``--threads`` (``gatescope --threads N|all``;
``charlm train --threads``), the environment variable ``GATESCOPE_THREADS``, its older name
``GATESCOPE_BLAS_THREADS``, then :data:`DEFAULT_THREADS` (one line to change).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from gatescope.nn import parallel
from gatescope.nn.checks import check_positive_int
from gatescope.nn.parallel import all_cores

__all__ = [
    "BLAS_ENV",
    "DEFAULT_THREADS",
    "THREADS_ENV",
    "all_cores",
    "default_threads",
    "limit_blas_threads",
    "parse_threads",
]

# read by BLAS libraries when a process starts: how child processes learn the limit
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# the commands' BLAS threads when neither --threads nor the environment says: a positive
# int or "all" (every core this process may use). 1 defends against a busy shared machine;
# benchmarks/threads.py measures what it costs on an idle one.
DEFAULT_THREADS: int | str = 1
# the environment variables that choose it, the first one set wins (the second: the old name)
THREADS_ENV = ("GATESCOPE_THREADS", "GATESCOPE_BLAS_THREADS")


def parse_threads(value: int | str, name: str = "threads") -> int:
    """A thread count from a positive int, its text, or "all" (:func:`all_cores`)."""
    text = str(value).strip()
    if text == "all":
        return all_cores()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a positive integer or 'all', got {value!r}")
    return int(text)


def default_threads() -> int:
    """The BLAS threads of a command that was given no ``--threads``: the first of
    :data:`THREADS_ENV` that is set, else :data:`DEFAULT_THREADS`."""
    for name in THREADS_ENV:
        if name in os.environ:
            return parse_threads(os.environ[name], name)
    return parse_threads(DEFAULT_THREADS, "DEFAULT_THREADS")


@contextlib.contextmanager
def limit_blas_threads(n: int, *, override_env: bool = False) -> Iterator[None]:
    """Inside the block, BLAS runs on at most ``n`` threads, in this process and in processes
    started inside it, and the sequence kernels split a batch over at most ``n``.

    This process: ``threadpoolctl.threadpool_limits`` and ``gatescope.nn.parallel``'s
    threads. Child processes (a sweep's worker pool): the variables of :data:`BLAS_ENV`, set
    to ``n`` unless the user set them already (``override_env=True``: set them anyway).
    Everything is restored on leaving the block.
    """
    n = check_positive_int("threads", n)
    from threadpoolctl import threadpool_limits

    old = {k: os.environ.get(k) for k in BLAS_ENV}
    for k in BLAS_ENV:
        if override_env:
            os.environ[k] = str(n)
        else:
            os.environ.setdefault(k, str(n))
    old_threads = parallel.set_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        parallel.set_threads(old_threads)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
