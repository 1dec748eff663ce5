"""How many threads NumPy's BLAS may use: the one helper every command goes through.

The recurrent products are small (B x H by H x 4H): on a busy machine with few cores, BLAS
threads mostly wait for each other, and one thread can be several times faster (a training
step was 2-6x slower with OpenBLAS's default threads on 2 busy cores).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from gatescope.nn.checks import check_positive_int

__all__ = ["BLAS_ENV", "limit_blas_threads"]

# read by BLAS libraries when a process starts: how child processes learn the limit
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def limit_blas_threads(n: int, *, override_env: bool = False) -> Iterator[None]:
    """Inside the block, BLAS runs on at most ``n`` threads, in this process and in processes
    started inside it.

    This process: ``threadpoolctl.threadpool_limits``. Child processes (a sweep's worker
    pool): the variables of :data:`BLAS_ENV`, set to ``n`` unless the user set them already
    (``override_env=True``: set them anyway). Everything is restored on leaving the block.
    """
    n = check_positive_int("threads", n)
    from threadpoolctl import threadpool_limits

    old = {k: os.environ.get(k) for k in BLAS_ENV}
    for k in BLAS_ENV:
        if override_env:
            os.environ[k] = str(n)
        else:
            os.environ.setdefault(k, str(n))
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
