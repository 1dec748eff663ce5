"""LSTM variants against the vanilla LSTM: CPU time of a training step and of inference.

    python benchmarks/bench_variants.py [--shapes 64,100,32,128 ...] [--variants peephole ...]
        [--dtypes float32 float64] [--blocks 3] [--calls 7]

A training step is forward + backward (dL/dx included); inference is forward, trace kept.
One BLAS thread (threadpoolctl), `time.process_time()` (CPU time: the machine this was
written on is shared), blocks of `--calls` calls of one case in a row, the median of each
block, then the median over `--blocks` blocks; the cases of a shape alternate block by
block, so that a variant and the vanilla LSTM see the same load. Prints one row per case:
ms, and ms / vanilla's ms at the same shape, dtype and mode. The backend follows
GATESCOPE_BACKEND (numba when it imports, else numpy).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import gatescope as gs
from gatescope.nn import backend
from gatescope.nn.lstm_variants import VARIANTS

SHAPES = [(64, 100, 32, 128), (32, 200, 64, 256), (128, 50, 128, 512), (16, 100, 5, 26)]


def case(variant: str, shape, dtype, mode: str):
    """A function running one training step or one inference of a fresh layer."""
    B, T, D, H = shape
    rng = np.random.default_rng(0)
    layer = gs.LSTM(D, H, variant=variant, dtype=dtype, seed=0)
    for p in layer.params.values():  # off the initial values (peepholes 0, gains 1)
        p += rng.normal(scale=0.1, size=p.shape).astype(p.dtype)
    x = rng.normal(size=(B, T, D)).astype(dtype)
    dy = rng.normal(size=(B, T, H)).astype(dtype)

    def train():
        layer(x)
        layer.backward(dy)

    def infer():
        layer(x)

    return train if mode == "train" else infer


def block(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=[",".join(map(str, s)) for s in SHAPES])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--modes", nargs="+", default=["train", "infer"])
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--calls", type=int, default=7)
    args = ap.parse_args(argv)
    names = ["vanilla"] + [v for v in args.variants if v != "vanilla"]
    print(f"backend {backend.backend()}, 1 BLAS thread, CPU ms, median of {args.blocks} blocks")
    print("| shape | dtype | mode | variant | ms | / vanilla |")
    print("|---|---|---|---|---|---|")
    with threadpool_limits(1):
        for s in args.shapes:
            shape = tuple(int(v) for v in s.split(","))
            for dt in args.dtypes:
                for mode in args.modes:
                    fns = {v: case(v, shape, np.dtype(dt), mode) for v in names}
                    for fn in fns.values():  # warm up (numba compiles or loads its cache)
                        fn()
                    meds = {v: [] for v in names}
                    for _ in range(args.blocks):
                        for v, fn in fns.items():
                            meds[v].append(block(fn, args.calls))
                    ms = {v: 1e3 * statistics.median(m) for v, m in meds.items()}
                    for v in names:
                        print(
                            f"| {s} | {dt} | {mode} | {v} | {ms[v]:.2f} | "
                            f"{ms[v] / ms['vanilla']:.2f} |",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
