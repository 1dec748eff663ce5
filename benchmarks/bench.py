"""gatescope against PyTorch on the CPU, side by side in one run: one table of ratios.

    .venv/bin/python benchmarks/bench.py                 # everything, 1 thread each
    .venv/bin/python benchmarks/bench.py --quick         # fewer repeats, no float64
    .venv/bin/python benchmarks/bench.py --threads 2 --arch lstm

What it measures, per architecture (LSTM, GRU, RNN) and shape (B, T, D, H), batch first:

- train: forward + backward through the whole sequence (dL/dx included), against
  `torch.nn.LSTM` etc. with the same weights, `y.backward(dy)` and x.requires_grad;
- infer: forward only, gatescope keeping its trace, against PyTorch under `torch.no_grad()`.

Timing on a shared, noisy machine: each case is warmed up, then gatescope and PyTorch run
alternately (the order flipping every round) for `--repeats` rounds; the table shows the
median of each and the ratio of the medians. The same number of threads is set for both:
`torch.set_num_threads(n)` and NumPy's BLAS via threadpoolctl.

Also reported: GFLOP/s (the matrix products only: LSTM forward 2*B*T*(D+H)*4H, backward
twice that; GRU 3H and RNN H in place of 4H) and its fraction of this machine's measured
matrix-multiply peak (the best of NumPy's and PyTorch's square products, same dtype and
threads), and for float32 training the peak memory of one training step (tracemalloc, which
sees NumPy's allocations) against the bytes backward must keep (the caches: every array in
each layer's cache dataclass).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc

import numpy as np

try:
    import torch
    from threadpoolctl import threadpool_limits
except ImportError as e:  # pragma: no cover - a message, not a traceback
    sys.exit(f"benchmarks need torch and threadpoolctl: pip install -e '.[bench]' ({e})")

import gatescope as gs

SHAPES = [  # (B, T, D, H); the first three are the large shapes, the rest are overhead-bound
    (64, 100, 32, 128),
    (32, 200, 64, 256),
    (128, 50, 128, 512),
    (16, 100, 5, 26),
    (1, 500, 8, 64),
]
LARGE = SHAPES[:3]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
TORCH = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def target(shape, mode):
    """The issue's targets: ratio <= 1.0 on the large shapes, <= 1.5 on the small ones."""
    if mode == "infer":
        return 1.0 if shape in LARGE else None
    return 1.0 if shape in LARGE else 1.5


def flops(arch, shape, mode):
    B, T, D, H = shape
    fwd = 2 * B * T * (D + H) * GATES[arch] * H
    return fwd if mode == "infer" else 3 * fwd


def matmul_peak(dtype, clock, repeats=5):
    """The best GFLOP/s of square products (NumPy and PyTorch) at a few sizes."""
    best = 0.0
    for n in (256, 512, 1024):
        a = np.random.default_rng(0).random((n, n)).astype(dtype)
        c = np.empty_like(a)
        ta, tc = torch.from_numpy(a), torch.from_numpy(c)
        for f in (
            lambda a=a, c=c: np.matmul(a, a, out=c),
            lambda ta=ta, tc=tc: torch.mm(ta, ta, out=tc),
        ):
            f()
            for _ in range(repeats):
                t0 = clock()
                f()
                best = max(best, 2 * n**3 / max(clock() - t0, 1e-9) / 1e9)
    return best


def make_pair(arch, shape, dtype):
    """A gatescope layer and a PyTorch module with the same weights, and the data."""
    B, T, D, H = shape
    torch.manual_seed(0)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    module = getattr(torch.nn, TORCH[arch])(D, H, batch_first=True, dtype=tdtype)
    layer = gs.from_torch(module)
    if layer.dtype != dtype:  # pragma: no cover - from_torch keeps the dtype
        raise RuntimeError(f"from_torch gave {layer.dtype}, wanted {dtype}")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, D)).astype(dtype)
    dy = rng.normal(size=(B, T, H)).astype(dtype)
    return layer, module, x, dy


def runners(arch, shape, dtype, mode):
    layer, module, x, dy = make_pair(arch, shape, dtype)
    xt = torch.from_numpy(x.copy())
    dyt = torch.from_numpy(dy.copy())
    if mode == "train":
        xt.requires_grad_(True)

        def run_gs():
            layer(x)
            layer.backward(dy)

        def run_torch():
            module.zero_grad(set_to_none=True)
            xt.grad = None
            y, _ = module(xt)
            y.backward(dyt)

    else:

        def run_gs():
            layer(x)

        def run_torch():
            with torch.no_grad():
                module(xt)

    return run_gs, run_torch, layer, x, dy


def time_pair(run_gs, run_torch, repeats, clock, budget=2.0):
    """Warm up, then alternate (order flipping each round); medians in seconds.

    At least `repeats` rounds, more (up to 5x) for short cases, so that each case gets
    about `budget` seconds: the median of many short runs is steadier.
    """
    for f in (run_gs, run_torch, run_gs, run_torch):
        f()
    t0 = clock()
    run_gs()
    run_torch()
    rounds = min(5 * repeats, max(repeats, math.ceil(budget / max(clock() - t0, 1e-9))))
    tg, tt = [], []
    for r in range(rounds):
        order = ((run_gs, tg), (run_torch, tt)) if r % 2 == 0 else ((run_torch, tt), (run_gs, tg))
        for f, acc in order:
            t0 = clock()
            f()
            acc.append(clock() - t0)
    return statistics.median(tg), statistics.median(tt), rounds


def cache_bytes(layer):
    """The bytes backward must keep: every array in each layer's cache dataclass."""
    total = 0
    for cache in layer._caches:
        for f in dataclasses.fields(cache):
            v = getattr(cache, f.name)
            if isinstance(v, np.ndarray):
                total += v.nbytes
    return total


def train_memory(arch, shape, dtype):
    """(peak bytes of a training step, bytes kept for backward), by tracemalloc.

    Steady state: the step measured is the second one, so the first step's caches (the
    trace) are alive when it starts, as in a training loop. x and dy are made before.
    """
    layer, _, x, dy = make_pair(arch, shape, dtype)
    layer(x)
    layer.backward(dy)  # untraced: numba compiles on first use, and its memory is not ours
    tracemalloc.start()
    layer(x)
    layer.backward(dy)
    tracemalloc.reset_peak()
    layer(x)
    layer.backward(dy)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, cache_bytes(layer)


def backend_name():
    from gatescope.nn import backend

    return backend.backend()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="threads for both (default 1)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per case (default 7)")
    p.add_argument("--arch", choices=["lstm", "gru", "rnn"], action="append")
    p.add_argument("--quick", action="store_true", help="3 repeats, float32 only")
    p.add_argument("--no-float64", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        help="cpu: the process's CPU time (default with 1 thread: on a shared machine it "
        "leaves out the time spent waiting for a core); wall: elapsed time (default otherwise)",
    )
    args = p.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    clock_name = args.clock or ("cpu" if args.threads == 1 else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    archs = args.arch or ["lstm", "gru", "rnn"]
    torch.set_num_threads(args.threads)
    limits = threadpool_limits(args.threads)  # noqa: F841 - kept alive for the whole run
    dtypes = [np.float32] if (args.quick or args.no_float64) else [np.float32, np.float64]
    peaks = {dt: matmul_peak(dt, clock) for dt in dtypes}

    print(
        f"# gatescope vs torch "
        f"{torch.__version__}, numpy {np.__version__}, backend {backend_name()}, "
        f"{args.threads} thread(s), {os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}"
    )
    print(
        f"# {clock_name} time, medians of >= {repeats} interleaved rounds per case; matmul peak "
        + ", ".join(f"{np.dtype(dt).name} {v:.1f} GFLOP/s" for dt, v in peaks.items())
    )
    print()
    head = (
        "| arch | dtype | mode | B, T, D, H | gatescope ms | torch ms | ratio | target | "
        "gs GFLOP/s (% peak) | torch GFLOP/s (% peak) | peak MB / kept MB |"
    )
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    misses = 0
    for dt in dtypes:
        modes = ["train", "infer"] if dt == np.float32 else ["train"]
        for arch in archs:
            for mode in modes:
                for shape in SHAPES:
                    tgt = target(shape, mode) if dt == np.float32 else None
                    if mode == "infer" and tgt is None:
                        continue
                    run_gs, run_torch, *_ = runners(arch, shape, dt, mode)
                    tg, tt, _ = time_pair(run_gs, run_torch, repeats, clock)
                    ratio = tg / tt
                    fl = flops(arch, shape, mode)
                    mem = ""
                    if mode == "train" and dt == np.float32 and not args.no_memory:
                        peak, kept = train_memory(arch, shape, dt)
                        mem = f"{peak / 2**20:.1f} / {kept / 2**20:.1f} = {peak / kept:.2f}x"
                    ok = "" if tgt is None else ("ok" if ratio <= tgt else "MISS")
                    misses += ok == "MISS"
                    pk = peaks[dt]
                    print(
                        f"| {arch} | {np.dtype(dt).name} | {mode} | {', '.join(map(str, shape))} "
                        f"| {tg * 1e3:.2f} | {tt * 1e3:.2f} | {ratio:.2f} "
                        f"| {'' if tgt is None else f'<= {tgt}'} {ok} "
                        f"| {fl / tg / 1e9:.1f} ({100 * fl / tg / 1e9 / pk:.0f}%) "
                        f"| {fl / tt / 1e9:.1f} ({100 * fl / tt / 1e9 / pk:.0f}%) | {mem} |",
                        flush=True,
                    )
    print()
    print(f"# {misses} case(s) above target")


if __name__ == "__main__":
    main()
