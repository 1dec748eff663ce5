"""Train lstm, gru and rnn on the long-term-memory tasks; write docs/training.md's results table.

    .venv/bin/python scripts/results_table.py                 # all 30 runs, then the page
    .venv/bin/python scripts/results_table.py --render-only   # the page from the saved results

Every run uses the defaults of `gatescope train` (hidden 64, float32, Adam lr 3e-3, batch 64,
clip-norm 1, LSTM forget bias 3, seed 0) except the step budget, which is capped
(``--max-steps``, default 2000) and so is the training time (``--time-limit``, default 45 s),
so that the whole table fits in ~20 minutes of a busy 2-core machine; runs stop early when
the task counts as solved. The time cap makes the table depend on the machine's load: it
says what each network learned within the same small budget, not what it can learn.
Results go to a JSON-lines file as each run ends (a killed table keeps what it finished),
then into docs/training.md between the markers, with the machine they ran on (its CPU model
and core count, recorded in the .meta.json beside the results). Whatever happened is shown,
failures included.
"""

from __future__ import annotations

import os

# One BLAS thread: the matrices are small and the machine is shared; more threads only spin.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from gatescope.cli.train import (  # noqa: E402
    DEFAULT_DTYPE,
    DEFAULT_FORGET_BIAS,
    DEFAULT_HIDDEN,
)
from gatescope.model import SequenceModel  # noqa: E402
from gatescope.tasks import get_task  # noqa: E402
from gatescope.train import TrainConfig, fit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- results-table:begin (scripts/results_table.py writes this part) -->"
END = "<!-- results-table:end -->"
ARCHS = ("lstm", "gru", "rnn")
RUNS = (
    [("recall", T) for T in (10, 50, 100, 200)]
    + [("adding", T) for T in (10, 50, 100, 200)]
    + [("copy", T) for T in (50, 100)]
)


def run_one(
    task_name: str, length: int, arch: str, max_steps: int, time_limit: float, seed: int
) -> dict:
    task = get_task(task_name, length)
    options = {"forget_bias": DEFAULT_FORGET_BIAS} if arch == "lstm" else {}
    model = SequenceModel.for_task(
        task, arch, DEFAULT_HIDDEN, seed=seed, dtype=DEFAULT_DTYPE, **options
    )
    config = TrainConfig(steps=max_steps, seed=seed, checkpoint_every=0)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fit(task, model, config, progress=False, time_limit=time_limit)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    value = result.metrics.get(task.metric_name, math.nan)
    return {
        "task": task_name,
        "length": length,
        "arch": arch,
        "metric": task.metric_name,
        "value": None if math.isnan(value) else value,
        "metrics": {k: (None if math.isnan(v) else v) for k, v in result.metrics.items()},
        "baseline": task.baseline,
        "solved": result.solved,
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        "seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),  # this process's CPU time: what the run cost the machine
        "max_steps": max_steps,
        "time_limit": time_limit,
        "seed": seed,
    }


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "NaN"
    return f"{value:.3f}" if metric == "accuracy" else f"{value:.4f}"


def render(results: list[dict], meta: dict) -> str:
    """The markdown between the page's markers."""
    by_key = {(r["task"], r["length"], r["arch"]): r for r in results}
    lines = [
        f"Budget per run: at most {meta['max_steps']} steps and {meta['time_limit']:.0f} seconds "
        "of training, whichever comes first, stopping early at the first evaluation (every 100 "
        "steps, 500 held-out sequences) where the task counts as solved. "
        f"Defaults of `gatescope train` otherwise; seed {meta['seed']}. Each cell: the final "
        "held-out metric, solved or not, steps, and seconds of wall time on "
        f"{meta.get('cpu', 'the machine it ran on')} ({meta.get('cores', '?')} cores, shared "
        f"with other jobs while it ran; {meta['when']}, {meta['total_minutes']:.1f} "
        "minutes in all, one BLAS thread).",
        "",
        "| task (metric, solved at) | T | baseline | lstm | gru | rnn |",
        "|---|---|---|---|---|---|",
    ]
    solved_at = {"recall": "acc >= 0.99", "adding": "MSE < 0.01", "copy": "CE < 5% of baseline"}
    for task_name, length in RUNS:
        cells = []
        baseline = None
        metric = None
        for arch in ARCHS:
            r = by_key.get((task_name, length, arch))
            if r is None:
                cells.append("not run")
                continue
            baseline, metric = r["baseline"], r["metric"]
            mark = "**solved**" if r["solved"] else "not solved"
            if r["stop_reason"] == "diverged":
                mark = "diverged"
            elif r["stop_reason"] == "time" and not r["solved"]:
                mark = "not solved (time budget)"
            cpu = f", {r['cpu_seconds']:.0f} s CPU" if "cpu_seconds" in r else ""
            cells.append(
                f"{_fmt(r['value'], r['metric'])} {mark} ({r['steps']} steps, "
                f"{r['seconds']:.0f} s{cpu})"
            )
        label = f"{task_name} ({metric or '?'}, {solved_at[task_name]})"
        base = "?" if baseline is None else _fmt(baseline, metric or "")
        lines.append(f"| {label} | {length} | {base} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> tuple[str, int]:
    """This machine's CPU, as the tables name it ("an Intel Xeon"), and its core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1]
                break
    except OSError:
        pass
    words = [w for w in name.replace("(R)", "").replace("(TM)", "").split() if w != "CPU"]
    words = [w for w in words if "@" not in w and not w.endswith("GHz")]
    name = " ".join(words[:2]) or "an unnamed CPU"
    article = "an" if name[0].lower() in "aeiou" else "a"
    return f"{article} {name}", os.cpu_count() or 1


def write_readme(readme: Path, table: str) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: markers {BEGIN!r} ... {END!r} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-steps", type=int, default=2000, help="step budget per run (2000)")
    p.add_argument(
        "--time-limit", type=float, default=45.0, help="seconds of training per run (45)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every run (0)")
    p.add_argument(
        "--results",
        type=Path,
        default=ROOT / "benchmarks" / "results_table.jsonl",
        help="JSON-lines file of the runs (appended as they finish)",
    )
    p.add_argument(
        "--readme",
        type=Path,
        default=ROOT / "docs" / "training.md",
        help="the page whose markers enclose the table (docs/training.md)",
    )
    p.add_argument("--render-only", action="store_true", help="rewrite the page's table only")
    p.add_argument("--only", nargs="*", default=None, help="run only these archs/tasks")
    args = p.parse_args()

    if not args.render_only:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text("")
        start = time.perf_counter()
        for task_name, length in RUNS:
            for arch in ARCHS:
                if args.only and arch not in args.only and task_name not in args.only:
                    continue
                r = run_one(task_name, length, arch, args.max_steps, args.time_limit, args.seed)
                with args.results.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(
                    f"{task_name:6} T={length:<4} {arch:4}: {r['metric']} "
                    f"{_fmt(r['value'], r['metric'])} solved={r['solved']} steps={r['steps']} "
                    f"{r['seconds']:.0f}s (total {(time.perf_counter() - start) / 60:.1f} min)",
                    flush=True,
                )
        total = (time.perf_counter() - start) / 60
        meta = {
            "max_steps": args.max_steps,
            "time_limit": args.time_limit,
            "seed": args.seed,
            "total_minutes": total,
            "when": time.strftime("%Y-%m-%d"),
            "python": platform.python_version(),
        }
        meta["cpu"], meta["cores"] = machine()
        args.results.with_suffix(".meta.json").write_text(json.dumps(meta) + "\n")
    results = [json.loads(line) for line in args.results.read_text().splitlines() if line]
    meta = json.loads(args.results.with_suffix(".meta.json").read_text())
    write_readme(args.readme, render(results, meta))
    print(f"wrote the table of {len(results)} runs into {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
