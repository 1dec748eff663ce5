"""How many threads should gatescope's commands give NumPy's BLAS? A training step at each.

The CLI runs BLAS on `gatescope.threads.default_threads()` threads (1 unless
GATESCOPE_THREADS, `gatescope --threads N` or the default in `gatescope/threads.py` says
otherwise): a defence against a busy shared machine. This measures what the choice costs on
the machine it runs on, with two training steps as the commands run them
(`gatescope.train.train_step`: forward, loss, backward, clipping, Adam):

- demo-sized: `gatescope demo`'s models (recall, T = 50, H = 64, batch 64, float32),
  LSTM, GRU and RNN;
- charlm-sized: `gatescope charlm train`'s default model (LSTM 2x128, one-hot V = 100,
  B = 32, T = 64), the same step as `charlm_vs_torch.py --speed`.

Each in a block of `--calls` x `--blocks` steps in a row at each thread count, the median
of the block medians, wall time (more threads only help the time a user waits for).

    python benchmarks/threads.py                 # 1 thread and all cores
    python benchmarks/threads.py --threads 1,2,4

`bench.py` runs the same measurement (its "training step" table).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - this folder's harness: threads, clocks, blocks
import charlm_vs_torch  # noqa: E402

from gatescope.demo import DemoConfig  # noqa: E402
from gatescope.model import SequenceModel  # noqa: E402
from gatescope.tasks import get_task  # noqa: E402
from gatescope.train import TrainConfig, train_step  # noqa: E402


def demo_stepper(arch: str, dtype: str = "float32") -> tuple[str, Callable[[], None]]:
    """One training step of `gatescope demo`'s model of `arch`, on one fixed batch."""
    c = DemoConfig()
    task = get_task("recall", c.length, n_symbols=c.n_symbols, noise_std=c.noise_std)
    opts = {"lstm": {"forget_bias": c.forget_bias}, "gru": {"update_bias": c.update_bias}}
    model = SequenceModel.for_task(task, arch, c.hidden_size, seed=0, dtype=dtype,
                                   **opts.get(arch, {}))  # fmt: skip
    cfg = TrainConfig(batch_size=c.batch_size, lr=c.lr, clip_norm=c.clip_norm)
    optimizer = cfg.make_optimizer(model.params)
    batch = task.make_batch(c.batch_size, np.random.default_rng(0))

    def step() -> None:
        train_step(model, optimizer, batch, cfg)

    name = f"demo: {arch.upper()} H={c.hidden_size}, recall T={c.length}, B={c.batch_size}"
    return name, step


def steppers(dtype: str = "float32") -> dict[str, Callable[[], None]]:
    out = dict(demo_stepper(a, dtype) for a in bench.ARCHS)
    name, fns = charlm_vs_torch.speed_steppers(dtype)
    out[name.replace(", train step", "")] = fns["gatescope"]
    return out


def steps(plan: bench.Plan, threads: int) -> list[dict]:
    """`bench.py`'s records: each step's time at `threads` threads (wall time)."""
    bench.set_threads(threads)
    out = []
    for name, f in steppers(plan.dtype).items():
        raw = bench.time_blocks({name: f}, plan.calls, plan.blocks, bench.time.perf_counter)
        out.append({"name": name, "threads": threads, "seconds": bench.summary(raw[name]),
                    "blocks": raw[name]})  # fmt: skip
        print(".", end="", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=bench.parse_thread_counts, default="1,all")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--calls", type=int, default=7)
    p.add_argument("--blocks", type=int, default=3)
    args = p.parse_args(argv)
    threads = args.threads  # a list: argparse applies the type to the default too
    plan = bench.Plan(archs=bench.ARCHS, shapes=(), modes=("train",), dtype=args.dtype,
                      calls=args.calls, blocks=args.blocks, method="blocks", clock="wall")  # fmt: skip
    recs = [r for n in threads for r in steps(plan, n)]
    print(file=sys.stderr)
    print(bench.threads_table(recs, threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
