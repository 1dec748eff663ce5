r"""Train every LSTM variant on recall and adding at two lengths; write a Greff-style table.

    .venv/bin/python scripts/variants_table.py                  # runs (resumable), then the table
    .venv/bin/python scripts/variants_table.py --table-only     # the table from saved runs

Every run uses the same settings (TrainConfig's defaults: Adam, lr 3e-3, batch 32, clip 1;
one layer of H=32, float32, forget-gate bias 1, the library's default; `--forget-bias 3`
for `gatescope train`'s), stops at the first evaluation that solves the task or at
`--steps`, and is then scored on 1000 test sequences no run saw. One JSON line per run goes
to `--runs`, so an interrupted sweep continues where it stopped. The tables (Markdown, one
per forget-gate bias among the runs) go to `--table` and to stdout: per variant and task the
mean test metric over seeds, how many seeds solved it, and the steps they took. Unlike
Greff et al. there is no per-variant hyperparameter search, and with three seeds most
differences are within seed noise; the table says which ones are not (`_verdict`,
`_steps_verdict`). The table of docs/variants.md took 117 runs, about 80 minutes on one core:

    .venv/bin/python scripts/variants_table.py
    .venv/bin/python scripts/variants_table.py --forget-bias 3 --tasks recall:50 \
        --variants vanilla peephole cifg nig nog noaf layernorm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# one BLAS thread: these matrices are small, and threads fighting over shared cores are ~10x
# slower; set before numpy loads
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from gatescope.model import SequenceModel  # noqa: E402
from gatescope.nn.lstm_variants import param_count  # noqa: E402
from gatescope.nn.recurrent import LSTM_VARIANTS  # noqa: E402
from gatescope.tasks import get_task  # noqa: E402
from gatescope.train import TrainConfig, evaluate_model, fit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TASKS = (("recall", 20), ("recall", 50), ("adding", 50), ("adding", 100))
NAMES = {
    "vanilla": "vanilla (PyTorch's LSTM)",
    "peephole": "peephole (PH)",
    "cifg": "coupled input-forget (CIFG)",
    "nfg": "no forget gate (NFG)",
    "nig": "no input gate (NIG)",
    "nog": "no output gate (NOG)",
    "noaf": "no output activation (NOAF)",
    "layernorm": "layer norm (LN)",
}


def run_one(variant: str, task_name: str, length: int, seed: int, args) -> dict:
    task = get_task(task_name, length)
    model = SequenceModel.for_task(
        task,
        "lstm",
        args.hidden,
        seed=seed,
        dtype="float32",
        variant=variant,
        forget_bias=args.forget_bias,
    )
    config = TrainConfig(steps=args.steps, seed=seed, eval_every=args.eval_every)
    t0 = time.perf_counter()
    result = fit(task, model, config, progress=False)
    test = evaluate_model(task, model, n=1000)
    return {
        "variant": variant,
        "task": task_name,
        "length": length,
        "seed": seed,
        "hidden": args.hidden,
        "max_steps": args.steps,
        "forget_bias": args.forget_bias,
        "params": model.recurrent.num_params(),
        "steps": result.steps,
        "solved": bool(task.solved(test)),
        "solved_in_training": bool(result.solved),
        "metric_name": task.metric_name,
        "metric": test[task.metric_name],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def load_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _key(r: dict) -> tuple:
    fb = r.get("forget_bias", 1.0)
    return (r["variant"], r["task"], r["length"], r["seed"], r["hidden"], r["max_steps"], fb)


def _verdict(mine: list[float], base: list[float], higher_is_better: bool) -> str:
    """'better' / 'worse' only when every seed of one beats every seed of the other by more
    than the larger spread among seeds; otherwise '~' (within noise)."""
    if not mine or not base or mine is base:
        return ""
    spread = max(max(mine) - min(mine), max(base) - min(base), 1e-3)
    lo_m, hi_m, lo_b, hi_b = min(mine), max(mine), min(base), max(base)
    if lo_m - hi_b > spread:
        return "better" if higher_is_better else "worse"
    if lo_b - hi_m > spread:
        return "worse" if higher_is_better else "better"
    return "~"


def _steps_verdict(mine: list[dict], base: list[dict]) -> str:
    """'fewer' / 'more' steps when every seed of one needed fewer steps than every seed of
    the other (an unsolved seed counts as never). With 3 seeds against 3 that happens by
    chance with probability 2 / C(6, 3) = 0.1: suggestive, not significant."""
    never = float("inf")
    a = [r["steps"] if r["solved"] else never for r in mine]
    b = [r["steps"] if r["solved"] else never for r in base]
    if not a or not b or min(a + b) == never:
        return ""
    if max(a) < min(b):
        return "fewer"
    if min(a) > max(b):
        return "more"
    return ""


def table(runs: list[dict], hidden: int, max_steps: int, eval_every: int = 100) -> str:
    """One table per forget-gate bias among the runs, then the caption."""
    runs = [r for r in runs if r["hidden"] == hidden and r["max_steps"] == max_steps]
    biases = sorted({r.get("forget_bias", 1.0) for r in runs})
    parts = []
    for fb in biases:
        some = [r for r in runs if r.get("forget_bias", 1.0) == fb]
        if len(biases) > 1:
            parts.append(f"Forget-gate bias {fb:g} at initialisation:\n")
        parts.append(_one_table(some, hidden) + "\n")
    return "\n".join(parts) + _caption(runs, hidden, max_steps, eval_every)


def _one_table(runs: list[dict], hidden: int) -> str:
    present = {(r["task"], r["length"]) for r in runs}
    cols = [tn for tn in TASKS if tn in present] + sorted(present - set(TASKS))
    head = ["variant", "params (D=8)"] + [
        f"{t} T={n} ({'acc' if t == 'recall' else 'MSE'})" for t, n in cols
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {}
    for r in runs:
        by.setdefault((r["variant"], r["task"], r["length"]), []).append(r)
    for v in LSTM_VARIANTS:
        some = [r for (vv, _, _), rs in by.items() if vv == v for r in rs]
        if not some:
            continue
        cells = [NAMES[v], f"{param_count(v, 8, hidden):,}"]
        for t, n in cols:
            rs = sorted(by.get((v, t, n), []), key=lambda r: r["seed"])
            if not rs:
                cells.append("")
                continue
            vals = [r["metric"] for r in rs]
            base = [r["metric"] for r in by.get(("vanilla", t, n), [])]
            mean = statistics.fmean(vals)
            fmt = "{:.3f}" if t == "recall" else "{:.4f}"
            solved = sum(r["solved"] for r in rs)
            steps = "/".join(str(r["steps"]) if r["solved"] else "-" for r in rs)
            verdict = "" if v == "vanilla" else _verdict(vals, base, t == "recall")
            mark = {"~": "", "better": " **+**", "worse": " **−**", "": ""}[verdict]
            if verdict == "~":  # same final metric: did it get there in fewer steps?
                base_runs = by.get(("vanilla", t, n), [])
                steps += {"fewer": " (fewer)", "more": " (more)", "": ""}[
                    _steps_verdict(rs, base_runs)
                ]
            cells.append(f"{fmt.format(mean)}{mark} · {solved}/{len(rs)} · {steps}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _caption(runs: list[dict], hidden: int, max_steps: int, eval_every: int) -> str:
    seeds = sorted({r["seed"] for r in runs})
    return (
        f"\nOne layer, H={hidden}, float32, Adam lr 3e-3, batch 32, clip 1, at most "
        f"{max_steps} steps, stopping when solved (recall: accuracy >= 0.99; adding: MSE < "
        f"0.01). Cell: mean test metric over seeds {', '.join(map(str, seeds))} (1000 unseen "
        "sequences) · seeds that solve the test sequences · steps per seed, at the evaluation "
        f"(every {eval_every} steps) that first found the held-out set solved (- = not solved "
        "on the test sequences: out of budget, or, in a few runs, stopped at >= 0.99 on the "
        "held-out set but just under 0.99 on the test set). "
        "**+**/**−**: better/worse than vanilla in every seed by more than the spread among "
        "seeds; unmarked cells are within seed noise of vanilla. (fewer)/(more): same final "
        "metric, but every seed needed fewer/more steps than every vanilla seed (an unsolved "
        "seed counts as never); with 3 seeds against 3 that happens by chance with "
        "probability 0.1, so it is suggestive, not significant. Comparisons are with vanilla "
        "at the same forget-gate bias (NFG has no forget gate, so no bias to set).\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="step budget per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--forget-bias", type=float, default=1.0, help="initial forget-gate bias")
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=[f"{t}:{n}" for t, n in TASKS],
        help="task:length pairs (default: %(default)s)",
    )
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--variants", nargs="+", default=list(LSTM_VARIANTS), choices=LSTM_VARIANTS)
    ap.add_argument("--runs", type=Path, default=ROOT / "benchmarks" / "variants_runs.jsonl")
    ap.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "variants_table.md")
    ap.add_argument("--table-only", action="store_true", help="only write the table")
    args = ap.parse_args(argv)

    runs = load_runs(args.runs)
    if not args.table_only:
        done = {_key(r) for r in runs}
        tasks = [(t, int(n)) for t, n in (spec.split(":") for spec in args.tasks)]
        todo = [
            (v, t, n, s)
            for s in args.seeds
            for t, n in tasks
            for v in args.variants
            if (v, t, n, s, args.hidden, args.steps, args.forget_bias) not in done
        ]
        for k, (v, t, n, s) in enumerate(todo, 1):
            r = run_one(v, t, n, s, args)
            runs.append(r)
            with open(args.runs, "a") as f:
                f.write(json.dumps(r) + "\n")
                f.flush()
                os.fsync(f.fileno())
            print(
                f"[{k}/{len(todo)}] {v:9s} {t} T={n} seed {s}: {r['metric_name']} "
                f"{r['metric']:.4f} solved={r['solved']} steps={r['steps']} ({r['seconds']}s)",
                flush=True,
            )
    text = table(runs, args.hidden, args.steps, args.eval_every)
    args.table.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
