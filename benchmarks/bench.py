"""gatescope against PyTorch on the CPU, measured the way a user runs each: one table of ratios.

    python benchmarks/bench.py                         # everything: ~10 min on an idle 2-core machine
    python benchmarks/bench.py --quick                 # a first look: ~3 min
    python benchmarks/bench.py --markdown results.md --json results.json
    python benchmarks/bench.py --arch lstm --shapes 64,100,32,128 --threads 1

Speed, per architecture (LSTM, GRU, RNN) and shape (B, T, D, H), batch first, same weights
(`gs.from_torch`), float32 unless `--dtype float64`:

- train: forward + backward through the whole sequence, dL/dx included; PyTorch:
  `y.backward(dy)` with x.requires_grad;
- infer: gatescope's forward (keeping its trace, as it always does) against PyTorch's
  forward under `torch.no_grad()`.

How a case is timed (`--method`):

- blocks (the default): each framework runs `--calls` (7) calls in a row and the block's
  median is kept; blocks alternate gatescope / PyTorch, `--blocks` (3) of each; the number
  reported is the median of a framework's block medians. A user runs one framework at a
  time, with its caches (and threads) warm: this is that.
- `--processes`: each framework in its own fresh process (one per thread count), blocks
  inside it.
- `--alternate`: the old measurement, labelled as such: the two frameworks alternate call
  by call (each call then starts with caches disturbed by the other).

Threads (`--threads 1,all`): the same count for every library: `torch.set_num_threads`,
threadpoolctl for NumPy's BLAS (and torch's OpenMP), `numba.set_num_threads`.

Also measured, in the same run and at each thread count: the LSTM variants (a training
step's time over the vanilla LSTM's, gatescope only, through `gs.LSTM(..., variant=...)`);
the plain NumPy path (`GATESCOPE_BACKEND=numpy`, in a subprocess) over the accelerated one;
GFLOP/s of the matrix products against this machine's matmul peak (best of NumPy's and
PyTorch's square products, n = 256..1024, same dtype and threads); the character LM's
training step against PyTorch's (`charlm_vs_torch.py`); a demo-sized and a char-LM-sized
training step at each thread count (`threads.py`). Once: the peak memory of a training step
(tracemalloc, steady state) against the bytes backward keeps.

No number here is a target met or missed by assertion: the table marks cells over the
issue's targets in bold; `--json` keeps every raw time.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

try:
    import threadpoolctl
    import torch
except ImportError as e:  # pragma: no cover - a message, not a traceback
    sys.exit(f"benchmarks need torch and threadpoolctl: pip install -e '.[bench]' ({e})")

import gatescope as gs
from gatescope.nn import parallel as gs_parallel
from gatescope.threads import all_cores, parse_threads

HERE = Path(__file__).resolve().parent
SHAPES = [  # (B, T, D, H); the first three are the large shapes, the rest are overhead-bound
    (64, 100, 32, 128),
    (32, 200, 64, 256),
    (128, 50, 128, 512),
    (16, 100, 5, 26),
    (1, 500, 8, 64),
]
LARGE = SHAPES[:3]
QUICK_SHAPES = [SHAPES[0], SHAPES[1], SHAPES[3], SHAPES[4]]  # all but the largest
VARIANT_SHAPES = [SHAPES[0], SHAPES[3]]  # one large, one small
ARCHS = ("lstm", "gru", "rnn")
MODES = ("train", "infer")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
TORCH = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
# the targets (float32): ratio gatescope / PyTorch, or of the kind named
TARGET_LARGE, TARGET_SMALL = 1.0, 1.3
TARGET_VARIANT, TARGET_NUMPY, TARGET_MEMORY = 1.3, 2.0, 1.5


# ------------------------------------------------------------------------------ threads, clocks


def parse_thread_counts(text: str) -> list[int]:
    """'1,all' -> [1, 2] on a 2-core machine (duplicates dropped, order kept)."""
    out: list[int] = []
    for part in text.split(","):
        try:
            n = parse_threads(part, "--threads")
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if n not in out:
            out.append(n)
    return out


_LIMITS: list = []  # the threadpoolctl limiter in force, undone before the next is set


def set_threads(n: int) -> None:
    """Every library of the run on `n` threads: torch, NumPy's BLAS (and OpenMP), numba,
    gatescope's batch split (`gatescope.nn.parallel`)."""
    torch.set_num_threads(n)
    gs_parallel.set_threads(n)
    if _LIMITS:
        _LIMITS.pop().restore_original_limits()
    _LIMITS.append(threadpoolctl.threadpool_limits(limits=n))
    sync_numba_threads()


def numba_layer() -> str | None:
    """numba's threading layer if something (a parallel kernel) launched it, else None.

    Never launches it: asking numba for its threads would, and its OpenMP layer in one
    process with PyTorch made torch's LSTM inference take ~420 ms a call at (4, 10, 3, 8) against
    0.09 ms without it (Intel Xeon, 2 cores, shared, 2026-12-02; the workqueue layer: no
    slowdown). gatescope's kernels run no parallel code today, so it stays unlaunched."""
    par = sys.modules.get("numba.np.ufunc.parallel")
    if par is None or not getattr(par, "_is_initialized", False):
        return None
    return sys.modules["numba"].threading_layer()


def sync_numba_threads() -> None:
    """numba's threads = torch's (the count set_threads set), where numba's layer runs."""
    if numba_layer() is not None:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def clock_for(name: str, threads: int) -> Callable[[], float]:
    """cpu: the process's CPU time, honest at one thread only (it sums every thread's)."""
    return time.process_time if name == "cpu" and threads == 1 else time.perf_counter


def clock_name(name: str, threads: int) -> str:
    return "cpu" if name == "cpu" and threads == 1 else "wall"


# ------------------------------------------------------------------------------ timing


def timed(f: Callable[[], object], clock: Callable[[], float]) -> float:
    t0 = clock()
    f()
    return clock() - t0


def time_blocks(
    fns: dict[str, Callable[[], object]],
    calls: int,
    blocks: int,
    clock: Callable[[], float],
    warmup: int = 2,
) -> dict[str, list[list[float]]]:
    """Each function in blocks of `calls` calls in a row, the blocks alternating between the
    functions (A A A, B B B, A A A, ...), after `warmup` calls each. Raw seconds per block."""
    raw: dict[str, list[list[float]]] = {k: [] for k in fns}
    for f in fns.values():
        for _ in range(warmup):
            f()
    sync_numba_threads()  # a kernel's first call may have launched numba's threads
    for _ in range(blocks):
        for k, f in fns.items():
            raw[k].append([timed(f, clock) for _ in range(calls)])
    return raw


def time_alternating(
    fns: dict[str, Callable[[], object]], rounds: int, clock: Callable[[], float], warmup: int = 2
) -> dict[str, list[list[float]]]:
    """The old measurement: the functions alternate call by call, the order flipping each
    round. Raw seconds, as one block per function."""
    raw: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(warmup):
        for f in fns.values():
            f()
    sync_numba_threads()
    items = list(fns.items())
    for r in range(rounds):
        for k, f in items if r % 2 == 0 else items[::-1]:
            raw[k].append(timed(f, clock))
    return {k: [v] for k, v in raw.items()}


def summary(blocks: list[list[float]]) -> float:
    """The median of the block medians (seconds)."""
    return statistics.median(statistics.median(b) for b in blocks)


# ------------------------------------------------------------------------------ cases


def flops(arch: str, shape: tuple[int, ...], mode: str) -> int:
    """The matrix products' floating-point operations: forward 2·B·T·(D+H)·G·H (G gate
    blocks: LSTM 4, GRU 3, RNN 1); backward twice that (dW and dx, dW_hh and dh)."""
    B, T, D, H = shape
    fwd = 2 * B * T * (D + H) * GATES[arch] * H
    return fwd if mode == "infer" else 3 * fwd


def target(shape: tuple[int, ...]) -> float:
    return TARGET_LARGE if tuple(shape) in LARGE else TARGET_SMALL


def matmul_peak(dtype, clock: Callable[[], float], repeats: int = 5) -> dict[str, float]:
    """The best GFLOP/s of square products n = 256, 512, 1024, by NumPy and by PyTorch."""
    best = {"numpy": 0.0, "torch": 0.0}
    for n in (256, 512, 1024):
        a = np.random.default_rng(0).random((n, n)).astype(dtype)  # (n, n)
        c = np.empty_like(a)  # (n, n)
        ta, tc = torch.from_numpy(a), torch.from_numpy(c)
        for name, f in (
            ("numpy", lambda a=a, c=c: np.matmul(a, a, out=c)),
            ("torch", lambda ta=ta, tc=tc: torch.mm(ta, ta, out=tc)),
        ):
            f()
            for _ in range(repeats):
                best[name] = max(best[name], 2 * n**3 / max(timed(f, clock), 1e-9) / 1e9)
    return best


def make_pair(arch: str, shape: tuple[int, ...], dtype):
    """A gatescope layer and a PyTorch module with the same weights, and the data."""
    B, T, D, H = shape
    torch.manual_seed(0)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    module = getattr(torch.nn, TORCH[arch])(D, H, batch_first=True, dtype=tdtype)
    layer = gs.from_torch(module)
    if layer.dtype != dtype:  # pragma: no cover - from_torch keeps the dtype
        raise RuntimeError(f"from_torch gave {layer.dtype}, wanted {dtype}")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, D)).astype(dtype)  # (B, T, D)
    dy = rng.normal(size=(B, T, H)).astype(dtype)  # (B, T, H)
    return layer, module, x, dy


def layer_runner(layer, x, dy, mode: str) -> Callable[[], None]:
    """A gatescope training step (forward, backward with dL/dx) or inference (trace kept)."""
    if mode == "infer":
        return lambda: layer(x)

    def step() -> None:
        layer(x)
        layer.backward(dy)

    return step


def torch_runner(module, x, dy, mode: str) -> Callable[[], None]:
    """PyTorch's training step (y.backward(dy), x.requires_grad) or no_grad inference."""
    xt = torch.from_numpy(x.copy())  # (B, T, D)
    dyt = torch.from_numpy(dy.copy())  # (B, T, H)
    if mode == "infer":

        def infer() -> None:
            with torch.no_grad():
                module(xt)

        return infer
    xt.requires_grad_(True)

    def step() -> None:
        module.zero_grad(set_to_none=True)
        xt.grad = None
        y, _ = module(xt)
        y.backward(dyt)

    return step


def runners(arch: str, shape, dtype, mode: str, frameworks: Sequence[str]):
    layer, module, x, dy = make_pair(arch, shape, dtype)
    make = {"gatescope": lambda: layer_runner(layer, x, dy, mode),
            "torch": lambda: torch_runner(module, x, dy, mode)}  # fmt: skip
    return {k: make[k]() for k in frameworks}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to measure and how (everything the command line chose)."""

    archs: tuple[str, ...]
    shapes: tuple[tuple[int, int, int, int], ...]
    modes: tuple[str, ...]
    dtype: str
    calls: int
    blocks: int
    method: str  # "blocks", "processes" or "alternate"
    clock: str  # "wall" or "cpu" (cpu applies at one thread only)

    def time(self, fns, threads: int):
        clock = clock_for(self.clock, threads)
        if self.method == "alternate":
            return time_alternating(fns, self.calls * self.blocks, clock)
        return time_blocks(fns, self.calls, self.blocks, clock)


def speed_cases(plan: Plan, threads: int, frameworks: Sequence[str]) -> list[dict]:
    """Every (arch, shape, mode) of the plan, timed for `frameworks` in this process."""
    out = []
    dtype = np.dtype(plan.dtype).type
    for arch in plan.archs:
        for mode in plan.modes:
            for shape in plan.shapes:
                fns = runners(arch, shape, dtype, mode, frameworks)
                raw = plan.time(fns, threads)
                out.append({
                    "arch": arch, "shape": list(shape), "mode": mode, "threads": threads,
                    "clock": clock_name(plan.clock, threads), "flops": flops(arch, shape, mode),
                    **{k: {"blocks": raw[k], "seconds": summary(raw[k])} for k in frameworks},
                })  # fmt: skip
                print(".", end="", file=sys.stderr, flush=True)
    return out


def run_worker(plan: Plan, threads: int, framework: str, env: dict | None = None) -> dict:
    """`speed_cases` for one framework in a fresh process (this script with --worker)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "worker.json")
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--worker", framework,
            "--threads", str(threads), "--json", path, "--dtype", plan.dtype,
            "--calls", str(plan.calls), "--blocks", str(plan.blocks), "--clock", plan.clock,
            "--arch", *plan.archs, "--mode", *plan.modes,
            "--shapes", *(",".join(map(str, s)) for s in plan.shapes),
        ]  # fmt: skip
        subprocess.run(cmd, check=True, env={**os.environ, **(env or {})})
        with open(path) as f:
            return json.load(f)


# ------------------------------------------------------------------------------ the extras


def variant_cases(plan: Plan, threads: int, shapes) -> list[dict]:
    """Each LSTM variant's training step against the vanilla LSTM's (gatescope only, the
    public constructor, the same seed and data), one block each, vanilla first."""
    from gatescope.nn.lstm_variants import VARIANTS

    dtype = np.dtype(plan.dtype).type
    clock = clock_for(plan.clock, threads)
    out = []
    for shape in shapes:
        B, T, D, H = shape
        rng = np.random.default_rng(0)
        x = rng.normal(size=(B, T, D)).astype(dtype)  # (B, T, D)
        dy = rng.normal(size=(B, T, H)).astype(dtype)  # (B, T, H)
        fns = {
            v: layer_runner(gs.LSTM(D, H, seed=0, dtype=dtype, variant=v), x, dy, "train")
            for v in VARIANTS
        }
        raw = time_blocks(fns, plan.calls, 1, clock, warmup=1)
        base = summary(raw["vanilla"])
        for v in VARIANTS:
            if v != "vanilla":
                s = summary(raw[v])
                out.append({"variant": v, "shape": list(shape), "threads": threads,
                            "seconds": s, "vanilla_seconds": base, "ratio": s / base,
                            "blocks": raw[v], "vanilla_blocks": raw["vanilla"]})  # fmt: skip
        print(".", end="", file=sys.stderr, flush=True)
    return out


def numpy_path_cases(
    plan: Plan, threads: int, accelerated: list[dict], most_shapes: int = 3
) -> list[dict]:
    """The NumPy reference (GATESCOPE_BACKEND=numpy, a fresh process) against the
    accelerated path's times of the main measurement, at the large shapes of the plan (at
    most `most_shapes`; the plan's first shape when it has none)."""
    shapes = tuple(s for s in plan.shapes if tuple(s) in LARGE)[:most_shapes]
    shapes = shapes or plan.shapes[:1]
    sub = dataclasses.replace(plan, shapes=shapes, blocks=1, method="blocks")
    res = run_worker(sub, threads, "gatescope", env={"GATESCOPE_BACKEND": "numpy"})
    fast = {(r["arch"], tuple(r["shape"]), r["mode"]): r for r in accelerated}
    out = []
    for r in res["speed"]:
        a = fast.get((r["arch"], tuple(r["shape"]), r["mode"]))
        if a is None:
            continue
        out.append({"arch": r["arch"], "shape": r["shape"], "mode": r["mode"], "threads": threads,
                    "numpy_seconds": r["gatescope"]["seconds"], "numpy_blocks": r["gatescope"]["blocks"],
                    "accelerated_seconds": a["gatescope"]["seconds"], "accelerated_backend": a["backend"],
                    "ratio": r["gatescope"]["seconds"] / a["gatescope"]["seconds"]})  # fmt: skip
    return out


def cache_bytes(layer) -> int:
    """The bytes backward must keep: every array in each layer's cache dataclass."""
    total = 0
    for cache in layer._caches:
        for f in dataclasses.fields(cache):
            v = getattr(cache, f.name)
            if isinstance(v, np.ndarray):
                total += v.nbytes
    return total


def train_memory(arch: str, shape, dtype) -> tuple[int, int]:
    """(peak bytes of a training step, bytes kept for backward), by tracemalloc.

    Steady state: the step measured is the third, so the previous step's caches (the trace)
    are alive when it starts, as in a training loop. x and dy are made before."""
    layer, _, x, dy = make_pair(arch, shape, dtype)
    step = layer_runner(layer, x, dy, "train")
    step()  # untraced: numba compiles (or loads) on first use, and its memory is not ours
    tracemalloc.start()
    step()
    tracemalloc.reset_peak()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, cache_bytes(layer)


def memory_cases(plan: Plan) -> list[dict]:
    out = []
    for arch in plan.archs:
        for shape in plan.shapes:
            peak, kept = train_memory(arch, shape, np.dtype(plan.dtype).type)
            out.append({"arch": arch, "shape": list(shape), "peak_bytes": peak,
                        "kept_bytes": kept, "ratio": peak / kept})  # fmt: skip
    return out


# ------------------------------------------------------------------------------ the machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the table header names: CPU, cores, NumPy and its BLAS, numba, torch and its
    BLAS and oneDNN, the date, the load."""
    blas = [
        {k: v for k, v in lib.items() if k in ("internal_api", "version", "architecture",
                                                 "threading_layer", "num_threads", "prefix")}
        for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"
    ]  # fmt: skip
    config = torch.__config__.show()
    torch_libs = [  # "MKL 2024.2", "oneDNN v3.12.0", "AVX512": what runs torch's products
        f"{name} {m.group(1)}"
        for name, pattern in (("MKL", r"Math Kernel Library Version ([\d.]+)"),
                              ("oneDNN", r"(?:MKL-DNN|oneDNN) (v[\d.]+)"),
                              ("OpenBLAS", r"OpenBLAS (\S+)"), ("CPU capability", r"CPU capability usage: (\w+)"))
        if (m := re.search(pattern, config))
    ]  # fmt: skip
    torch_blas = re.search(r"BLAS_INFO=(\w+)", config)
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:  # pragma: no cover - numba is optional
        numba_version = None
    from gatescope.nn import backend

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": all_cores(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": blas,
        "numba": numba_version,
        "torch": torch.__version__,
        "torch_blas": torch_blas.group(1) if torch_blas else None,
        "torch_libs": torch_libs,
        "gatescope": gs.__version__,
        "backend": backend.backend(),
        "load_average": list(os.getloadavg()),
    }


# ------------------------------------------------------------------------------ the table


def _shape(s) -> str:
    return f"({', '.join(map(str, s))})"


def _cell(ratio: float, a: float, b: float, limit: float | None, unit: str = "ms") -> str:
    """'0.93 (61.0 / 65.6 ms)', bold when over the target."""
    r = f"{ratio:.2f}"
    if limit is not None and ratio > limit:
        r = f"**{r}**"
    return f"{r} ({_num(a)} / {_num(b)} {unit})"


def _num(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def header(meta: dict, plan: Plan, threads: list[int]) -> list[str]:
    blas = "; ".join(
        f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, "
        f"{b.get('threading_layer')})"
        for b in meta["numpy_blas"]
    )
    how = {
        "blocks": f"blocks: {plan.calls} calls in a row, median; {plan.blocks} blocks of each "
        "framework, alternating; the median of the block medians",
        "processes": f"each framework in its own fresh process; inside it {plan.blocks} blocks "
        f"of {plan.calls} calls, the median of the block medians",
        "alternate": f"ALTERNATING call by call (the old measurement), median of "
        f"{plan.calls * plan.blocks} calls each",
    }[plan.method]
    clock = "CPU time at one thread, wall time at more" if plan.clock == "cpu" else "wall time"
    layer = meta.get("numba_layer")
    numba_threads = (
        f"numba's threading layer {layer}" if layer
        else "numba's threading layer not launched (no parallel kernel ran)"
    )  # fmt: skip
    if layer == "omp" and plan.method != "processes":
        numba_threads += (
            ": WARNING, numba's OpenMP threads share the process with PyTorch's, which has "
            "slowed PyTorch's LSTM by orders of magnitude; compare with --processes"
        )
    return [
        f"Measured {meta['date']} on {meta['cpu']}, {meta['cores']} cores "
        f"(load average {meta['load_average'][0]:.1f} at the start); {meta['platform']}.",
        f"NumPy {meta['numpy']} with {blas or 'no BLAS found by threadpoolctl'}; numba "
        f"{meta['numba']} (gatescope backend: {meta['backend']}); PyTorch {meta['torch']} "
        f"(BLAS {meta['torch_blas']}; {'; '.join(meta['torch_libs'])}).",
        f"{plan.dtype}, {clock}; {how}. Threads: {', '.join(map(str, threads))} "
        "(torch.set_num_threads, threadpoolctl, numba.set_num_threads); " + numba_threads + ".",
    ]


def render(res: dict) -> str:
    meta, plan = (
        res["machine"],
        Plan(**{**res["plan"], "shapes": tuple(map(tuple, res["plan"]["shapes"]))}),
    )
    threads = res["threads"]
    f32 = plan.dtype == "float32"  # the targets are float32's
    names = thread_names(threads)
    cols = [(n, m) for n in threads for m in plan.modes]
    lines = [
        f"# gatescope vs PyTorch: {plan.dtype}, {plan.method}",
        "",
        *header(meta, plan, threads),
    ]
    lines += ["", "Ratio = gatescope time / PyTorch time (lower is better), the two times in "
              "ms beside it." + (" **Bold**: over the issue's target (large shapes 1.0, small "
              "1.3; char LM 1.0)." if f32 else "")]  # fmt: skip
    head = "| case | " + " | ".join(f"{names[n]} {m}" for n, m in cols) + " |"
    lines += ["", head, "|---" * (len(cols) + 1) + "|"]
    speed = {(r["arch"], tuple(r["shape"]), r["mode"], r["threads"]): r for r in res["speed"]}
    for arch in plan.archs:
        for shape in plan.shapes:
            cells = []
            for n, m in cols:
                r = speed.get((arch, tuple(shape), m, n))
                if r is None:
                    cells.append("")
                    continue
                g, t = r["gatescope"]["seconds"], r["torch"]["seconds"]
                cells.append(_cell(g / t, g * 1e3, t * 1e3, target(shape) if f32 else None))
            lines.append(f"| {arch.upper()} {_shape(shape)} | " + " | ".join(cells) + " |")
    if res.get("charlm"):
        lines.append(charlm_row(res["charlm"], cols, f32))

    if res.get("gflops_rows", True) and res["speed"]:
        lines += ["", "GFLOP/s of the matrix products, gatescope / PyTorch, and the fraction of "
                  "the matmul peak measured in the same run at that thread count ("
                  + ", ".join(f"{names[n]}: {res['peak'][str(n)]['best']:.1f} GFLOP/s"
                              for n in threads) + ")."]  # fmt: skip
        lines += ["", head, "|---" * (len(cols) + 1) + "|"]
        for arch in plan.archs:
            for shape in plan.shapes:
                cells = []
                for n, m in cols:
                    r = speed.get((arch, tuple(shape), m, n))
                    if r is None:
                        cells.append("")
                        continue
                    pk = res["peak"][str(n)]["best"]
                    g, t = (r["flops"] / r[k]["seconds"] / 1e9 for k in ("gatescope", "torch"))
                    cells.append(f"{g:.1f} ({100 * g / pk:.0f}%) / {t:.1f} ({100 * t / pk:.0f}%)")
                lines.append(f"| {arch.upper()} {_shape(shape)} | " + " | ".join(cells) + " |")

    if res.get("variants"):
        vs = sorted(
            {r["variant"] for r in res["variants"]},
            key=[r["variant"] for r in res["variants"]].index,
        )
        vshapes = sorted({tuple(r["shape"]) for r in res["variants"]}, key=plan.shapes.index)
        vcols = [(n, s) for n in threads for s in vshapes]
        lines += ["", "LSTM variants: a training step's time over the vanilla LSTM's at the same "
                  "shape (gatescope only; the variant's and vanilla's ms beside)."
                  + (f" **Bold**: over {TARGET_VARIANT}." if f32 else "")]  # fmt: skip
        lines += ["", "| variant | " + " | ".join(f"{names[n]} {_shape(s)}" for n, s in vcols) + " |",
                  "|---" * (len(vcols) + 1) + "|"]  # fmt: skip
        vmap = {(r["variant"], tuple(r["shape"]), r["threads"]): r for r in res["variants"]}
        for v in vs:
            cells = []
            for n, s in vcols:
                r = vmap.get((v, s, n))
                cells.append("" if r is None else _cell(r["ratio"], r["seconds"] * 1e3,
                             r["vanilla_seconds"] * 1e3, TARGET_VARIANT if f32 else None))  # fmt: skip
            lines.append(f"| {v} | " + " | ".join(cells) + " |")

    if res.get("numpy_path"):
        acc = res["numpy_path"][0]["accelerated_backend"]
        lines += ["", f"The plain NumPy path (GATESCOPE_BACKEND=numpy, a fresh process): its time "
                  f"over the accelerated path's ({acc}), gatescope only, NumPy's and {acc}'s ms "
                  "beside." + (f" **Bold**: over {TARGET_NUMPY}." if f32 else "")]  # fmt: skip
        lines += ["", head, "|---" * (len(cols) + 1) + "|"]
        npm = {
            (r["arch"], tuple(r["shape"]), r["mode"], r["threads"]): r for r in res["numpy_path"]
        }
        for arch in plan.archs:
            for shape in sorted(
                {tuple(r["shape"]) for r in res["numpy_path"]}, key=plan.shapes.index
            ):
                cells = []
                for n, m in cols:
                    r = npm.get((arch, shape, m, n))
                    cells.append("" if r is None else _cell(r["ratio"], r["numpy_seconds"] * 1e3,
                                 r["accelerated_seconds"] * 1e3, TARGET_NUMPY if f32 else None))  # fmt: skip
                lines.append(f"| {arch.upper()} {_shape(shape)} | " + " | ".join(cells) + " |")

    if res.get("threads_steps"):
        lines += ["", threads_table(res["threads_steps"], threads)]

    if res.get("memory"):
        lines += ["", "Memory of a training step (tracemalloc, steady state: the previous step's "
                  "trace alive), against the bytes backward keeps (every array of the layer's "
                  "cache)." + (f" **Bold**: over {TARGET_MEMORY}x." if f32 else "")]  # fmt: skip
        lines += ["", "| case | peak MB | kept MB | peak / kept |", "|---|---|---|---|"]
        for r in res["memory"]:
            q = f"{r['ratio']:.2f}x"
            if f32 and r["ratio"] > TARGET_MEMORY:
                q = f"**{q}**"
            lines.append(f"| {r['arch'].upper()} {_shape(r['shape'])} | {r['peak_bytes'] / 2**20:.1f} "
                         f"| {r['kept_bytes'] / 2**20:.1f} | {q} |")  # fmt: skip
    lines += ["", f"Load average at the end: {res['load_end'][0]:.1f}; run took "
              f"{res['seconds']:.0f} s (`benchmarks/bench.py {' '.join(res['argv'])}`)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def thread_names(threads: list[int]) -> dict[int, str]:
    return {n: "1 thread" if n == 1 else f"{n} threads" + (" (all)" if n == all_cores() else "")
            for n in threads}  # fmt: skip


def threads_table(recs: list[dict], threads: list[int]) -> str:
    """`threads.py`'s table: each whole training step's time at each thread count."""
    names = thread_names(threads)
    lines = ["A whole training step (`gatescope.train.train_step`: forward, loss, backward, "
             "clipping, Adam) at each thread count, gatescope only, wall time; in brackets the "
             "time over the time at 1 thread (below 1: more threads help).", "",
             "| step | " + " | ".join(names[n] for n in threads) + " |",
             "|---" * (len(threads) + 1) + "|"]  # fmt: skip
    steps: dict[str, dict[int, float]] = {}
    for r in recs:
        steps.setdefault(r["name"], {})[r["threads"]] = r["seconds"]
    for name, by_n in steps.items():
        one = by_n.get(1)
        cells = [
            ("" if n not in by_n else f"{by_n[n] * 1e3:.1f} ms"
             + ("" if one is None or n == 1 else f" ({by_n[n] / one:.2f})"))
            for n in threads
        ]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def charlm_row(recs: list[dict], cols, f32: bool) -> str:
    """The char LM's line of the speed table (train columns only)."""
    by_n = {r["threads"]: r for r in recs}
    cells = []
    for n, m in cols:
        r = by_n.get(n)
        if r is None or m != "train":
            cells.append("")
            continue
        g, t = r["gatescope"]["seconds"], r["torch"]["seconds"]
        cells.append(_cell(g / t, g * 1e3, t * 1e3, 1.0 if f32 else None))
    return f"| {recs[0]['name']} | " + " | ".join(cells) + " |"


# ------------------------------------------------------------------------------ main


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"a shape is B,T,D,H (four positive integers), got {text!r}"
        )
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=parse_thread_counts, default="1,all",
                   help="thread counts, comma-separated; 'all' = every core (default 1,all)")  # fmt: skip
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--arch", choices=ARCHS, nargs="+", help="architectures (default: all three)")
    p.add_argument("--shapes", type=parse_shape, nargs="+", metavar="B,T,D,H",
                   help="shapes (default: the issue's five; --quick: all but the largest)")  # fmt: skip
    p.add_argument("--mode", choices=MODES, nargs="+", help="train and/or infer (default: both)")
    p.add_argument("--quick", action="store_true", help="fewer calls and shapes: ~3 min idle")
    p.add_argument("--calls", type=int, help="calls per block (default 7; --quick 5)")
    p.add_argument("--blocks", type=int, help="blocks per framework (default 3; --quick 2)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--processes", action="store_true",
                     help="each framework in its own fresh process")  # fmt: skip
    how.add_argument("--alternate", action="store_true",
                     help="the old measurement: alternate the frameworks call by call")  # fmt: skip
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: CPU time at one thread (a busy machine); wall time at more")  # fmt: skip
    for extra in ("variants", "numpy", "memory", "charlm", "steps"):
        p.add_argument(f"--no-{extra}", action="store_true", help=f"skip the {extra} measurement")
    p.add_argument("--json", metavar="FILE", help="write every raw number here")
    p.add_argument("--markdown", metavar="FILE", help="write the tables here, ready to paste")
    p.add_argument("--worker", choices=("gatescope", "torch"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    threads = args.threads  # a list: argparse applies the type to the default too
    plan = Plan(
        archs=tuple(args.arch or ARCHS),
        shapes=tuple(args.shapes or (QUICK_SHAPES if args.quick else SHAPES)),
        modes=tuple(args.mode or MODES),
        dtype=args.dtype,
        calls=args.calls or (5 if args.quick else 7),
        blocks=args.blocks or (2 if args.quick else 3),
        method="processes" if args.processes else "alternate" if args.alternate else "blocks",
        clock=args.clock,
    )
    if args.worker:  # one framework, one thread count, in this fresh process
        set_threads(threads[0])
        from gatescope.nn import backend

        recs = speed_cases(plan, threads[0], [args.worker])
        for r in recs:
            r["backend"] = backend.backend()
        with open(args.json, "w") as f:
            json.dump({"speed": recs}, f)
        return 0

    t_start = time.perf_counter()
    sys.path.insert(0, str(HERE))  # charlm_vs_torch.py and threads.py, this folder's
    meta = machine()
    res: dict = {"machine": meta, "plan": dataclasses.asdict(plan), "threads": threads,
                 "argv": argv, "peak": {}, "speed": [], "variants": [], "numpy_path": [],
                 "memory": [], "charlm": [], "threads_steps": []}  # fmt: skip
    print("\n".join(header(meta, plan, threads)), file=sys.stderr)
    from gatescope.nn import backend

    for n in threads:
        print(f"\n{n} thread(s): ", end="", file=sys.stderr, flush=True)
        set_threads(n)
        pk = matmul_peak(np.dtype(plan.dtype).type, clock_for(plan.clock, n))
        res["peak"][str(n)] = {**pk, "best": max(pk.values())}
        if plan.method == "processes":
            recs = [run_worker(plan, n, k)["speed"] for k in ("gatescope", "torch")]
            speed = [{**g, "torch": t["torch"]} for g, t in zip(*recs, strict=True)]
        else:
            speed = speed_cases(plan, n, ["gatescope", "torch"])
            for r in speed:
                r["backend"] = backend.backend()
        res["speed"] += speed
        if not args.no_variants and "lstm" in plan.archs:
            vshapes = [s for s in plan.shapes if s in VARIANT_SHAPES] or list(plan.shapes[:1])
            res["variants"] += variant_cases(plan, n, vshapes[: 1 if args.quick else 2])
        if not args.no_numpy and backend.backend() != "numpy":
            res["numpy_path"] += numpy_path_cases(plan, n, speed, 1 if args.quick else 3)
        if not args.no_charlm or not args.no_steps:
            import charlm_vs_torch
            import threads as threads_bench

            if not args.no_charlm:
                res["charlm"].append(charlm_vs_torch.speed(plan, n))
            if not args.no_steps:
                res["threads_steps"] += threads_bench.steps(plan, n)
    if not args.no_memory and "train" in plan.modes:
        set_threads(1)
        res["memory"] = memory_cases(plan)
    res["load_end"] = list(os.getloadavg())
    res["machine"]["numba_layer"] = numba_layer()
    res["seconds"] = time.perf_counter() - t_start
    table = render(res)
    print(file=sys.stderr)
    print(table, end="")
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.modules.setdefault("bench", sys.modules[__name__])  # one module for the helpers' imports
    sys.exit(main())
