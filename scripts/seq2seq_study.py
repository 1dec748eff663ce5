"""What attention changes, measured: the runs behind docs/seq2seq.md's section of that name.

    PYTHONPATH=src python scripts/seq2seq_study.py              # train what is missing, measure
    PYTHONPATH=src python scripts/seq2seq_study.py --only train-trick

Trains (checkpoints and CPU times in runs/seq2seq_study/, reused when present):

- ``reverse_bahdanau``: `gatescope seq2seq train --task reverse` with its defaults (the
  command line itself is called, so these are exactly the defaults);
- ``reverse_none``: the same without attention (``--attention none``), ``--steps``
  NONE_STEPS (it never early-stops);
- ``trick_plain``, ``trick_reversed``: no attention, strings of exactly TRICK_LENGTH symbols,
  without and with ``reverse_source`` (Sutskever et al. 2014), held-out exact match every
  TRICK_EVAL steps.

Then measures: (a) exact match against source length 5..LONGEST (each length alone; lengths
above 20 were never trained on) for both reverse models; (b) the trick's training curves and
the mean connectivity of both; (c) connectivity with and without attention on reverse at
length 20. Writes docs/img/seq2seq_*.png and benchmarks/seq2seq_study.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone

import numpy as np

from gatescope import viz
from gatescope.cli import main as gatescope_main
from gatescope.inspect.seq2seq import connectivity
from gatescope.model import read_model_file
from gatescope.seq2seq import Seq2Seq
from gatescope.tasks.seq2seq import ReverseTask
from gatescope.train import TrainConfig, evaluate_model, fit, resume_state
from gatescope.viz.seq2seq import accuracy_by_length_figure, connectivity_figure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "runs", "seq2seq_study")
IMG = os.path.join(ROOT, "docs", "img")
JSON_OUT = os.path.join(ROOT, "benchmarks", "seq2seq_study.json")

NONE_STEPS = 4000  # steps of the reverse model without attention
TRICK_LENGTH = 10  # the source-reversal runs: strings of exactly this many symbols
TRICK_HIDDEN = 128
TRICK_STEPS = 3000
TRICK_EVAL = 100
LONGEST = 30  # (a): lengths 5..LONGEST, 300 held-out strings each
PER_LENGTH = 300
CONN_EXAMPLES = 32  # connectivity: mean over this many held-out strings


def _path(name: str) -> str:
    return os.path.join(RUNS, f"{name}.safetensors")


def _record(name: str, cpu: float) -> None:
    _, _, _, state = resume_state(_path(name))
    with open(os.path.join(RUNS, f"{name}.json"), "w") as f:
        json.dump(
            {
                "cpu_seconds": round(cpu, 1),
                "wall_seconds": round(state.seconds, 1),
                "steps": state.step,
                "stop_reason": state.stop_reason,
                "history": state.history,
            },
            f,
            indent=1,
        )


def _done(name: str) -> bool:
    return os.path.exists(os.path.join(RUNS, f"{name}.json"))


def _cli_train(name: str, *extra: str) -> None:
    if _done(name):
        return
    argv = ["seq2seq", "train", "--task", "reverse", "--out", _path(name), "--force", *extra]
    print("gatescope", " ".join(argv), flush=True)
    c0 = time.process_time()
    rc = gatescope_main(argv)
    if rc != 0:
        sys.exit(f"{name}: gatescope exited {rc}")
    _record(name, time.process_time() - c0)


def _trick_train(name: str, reverse_source: bool) -> None:
    if _done(name):
        return
    task = ReverseTask(length=TRICK_LENGTH, min_length=TRICK_LENGTH)
    model = Seq2Seq(
        task.input_size,
        task.output_size,
        TRICK_HIDDEN,
        attention="none",
        seed=0,
        reverse_source=reverse_source,
    )
    config = TrainConfig(
        steps=TRICK_STEPS,
        batch_size=64,
        lr=3e-3,
        clip_norm=5.0,
        eval_every=TRICK_EVAL,
        eval_size=500,
        seed=0,
        checkpoint_every=0,
        early_stop=False,
    )
    print(f"{name}: reverse, length {TRICK_LENGTH}, reverse_source={reverse_source}", flush=True)
    c0 = time.process_time()
    fit(task, model, config, checkpoint_path=_path(name), progress=False, log=print)
    _record(name, time.process_time() - c0)


def _load(name: str) -> tuple[Seq2Seq, dict]:
    """The model and its record; a run still going is measured at its last checkpoint
    (its record then says so: ``finished`` false, no CPU time)."""
    model, _, _ = read_model_file(_path(name))
    record = os.path.join(RUNS, f"{name}.json")
    if os.path.exists(record):
        with open(record) as f:
            return model, {**json.load(f), "finished": True}
    _, _, _, state = resume_state(_path(name))
    return model, {
        "cpu_seconds": None,
        "wall_seconds": round(state.seconds, 1),
        "steps": state.step,
        "stop_reason": None,
        "history": state.history,
        "finished": False,
    }


def _mean_connectivity(model: Seq2Seq, length: int, n: int) -> np.ndarray:
    """Mean (T, S) connectivity over n held-out strings of `length` (teacher forcing on the
    true reversal, so every model is measured on the same tokens)."""
    task = ReverseTask(length=length, min_length=length)
    batch = task.make_heldout_batch(n, np.random.default_rng(11))
    return connectivity(model, batch.x, batch.y).mean(axis=0)  # (T, S)


def _conn_summary(conn: np.ndarray) -> dict:
    """The anti-diagonal (output t is source L-1-t) against the rest, per output step."""
    L = conn.shape[1]
    aligned = np.array([conn[t, L - 1 - t] for t in range(L)])  # (L,)
    rest = np.array([(conn[t].sum() - conn[t, L - 1 - t]) / (L - 1) for t in range(L)])
    return {
        "aligned": [float(v) for v in aligned],
        "others_mean": [float(v) for v in rest],
        "aligned_over_others": [float(a / r) for a, r in zip(aligned, rest, strict=True)],
        "eos_row": [float(v) for v in conn[L]] if conn.shape[0] > L else None,
    }


def train(only: str | None) -> None:
    os.makedirs(RUNS, exist_ok=True)
    if only in (None, "train-attn"):
        _cli_train("reverse_bahdanau", "--no-progress")
    if only in (None, "train-none"):
        _cli_train("reverse_none", "--attention", "none", "--steps", str(NONE_STEPS), "--quiet")
    if only in (None, "train-trick", "train-trick-plain"):
        _trick_train("trick_plain", False)
    if only in (None, "train-trick", "train-trick-reversed"):
        _trick_train("trick_reversed", True)


def measure() -> None:
    c0 = time.process_time()
    os.makedirs(IMG, exist_ok=True)
    models = {n: _load(n) for n in ("reverse_bahdanau", "reverse_none")}
    labels = {"reverse_bahdanau": "bahdanau attention", "reverse_none": "no attention"}
    # (a) exact match against length, each length alone
    lengths = list(range(5, LONGEST + 1))
    by_length: dict[str, dict[str, list[float]]] = {}
    for name, (model, _) in models.items():
        em, tok = [], []
        for L in lengths:
            m = evaluate_model(ReverseTask(length=L, min_length=L), model, n=PER_LENGTH, seed=0)
            em.append(m["exact_match"])
            tok.append(m["token_accuracy"])
        by_length[name] = {"exact_match": em, "token_accuracy": tok}
        print(name, "exact match by length", [round(v, 3) for v in em], flush=True)
    fig = accuracy_by_length_figure(
        {labels[n]: (lengths, v["exact_match"]) for n, v in by_length.items()},
        trained=(5, 20),
        title="reverse: exact match against length (LSTM, H = 128, trained on 5-20)",
    )
    viz.save(fig, os.path.join(IMG, "seq2seq_length_accuracy.png"), dpi=80)
    full = {n: evaluate_model(ReverseTask(), m, n=2000, seed=0) for n, (m, _) in models.items()}
    at20 = {
        n: evaluate_model(ReverseTask(length=20, min_length=20), m, n=1000, seed=0)
        for n, (m, _) in models.items()
    }

    # (c) connectivity with and without attention, reverse at length 20
    conn = {n: _mean_connectivity(m, 20, CONN_EXAMPLES) for n, (m, _) in models.items()}
    src_labels = [f"x{s + 1}" for s in range(20)]
    out_labels = [f"x{20 - t}" for t in range(20)] + ["<eos>"]
    fig = connectivity_figure(
        {labels[n]: c for n, c in conn.items()},
        src_labels,
        out_labels,
        title=f"reverse, length 20: mean connectivity over {CONN_EXAMPLES} held-out strings",
    )
    viz.save(fig, os.path.join(IMG, "seq2seq_connectivity_reverse.png"), dpi=80)

    # (b) the source-reversal trick (no attention)
    tricks = {n: _load(n) for n in ("trick_plain", "trick_reversed")}
    tlabels = {
        "trick_plain": "source as written (first output = last symbol read)",
        "trick_reversed": "--reverse-source (first output = first symbol read)",
    }
    fig = viz.training_curves_figure(
        {tlabels[n]: rec["history"] for n, (_, rec) in tricks.items()},
        metric="exact_match",
        title=f"reverse, length {TRICK_LENGTH}, no attention: with and without --reverse-source",
    )
    viz.save(fig, os.path.join(IMG, "seq2seq_reversal_trick.png"), dpi=80)
    L = TRICK_LENGTH
    tconn = {n: _mean_connectivity(m, L, CONN_EXAMPLES) for n, (m, _) in tricks.items()}
    fig = connectivity_figure(
        {tlabels[n].split(" (")[0]: c for n, c in tconn.items()},
        [f"x{s + 1}" for s in range(L)],
        [f"x{L - t}" for t in range(L)] + ["<eos>"],
        title=f"reverse, length {L}, no attention: mean connectivity ({CONN_EXAMPLES} strings)",
    )
    viz.save(fig, os.path.join(IMG, "seq2seq_connectivity_trick.png"), dpi=80)
    ttest = {
        n: evaluate_model(ReverseTask(length=L, min_length=L), m, n=1000, seed=0)
        for n, (m, _) in tricks.items()
    }

    def run_info(name: str, model: Seq2Seq, rec: dict) -> dict:
        return {
            "model": model.config.to_dict(),
            "steps": rec["steps"],
            "stop_reason": rec["stop_reason"],
            "finished": rec["finished"],
            "cpu_seconds": rec["cpu_seconds"],
            "wall_seconds": rec["wall_seconds"],
            "history": [
                {k: h[k] for k in ("step", "loss", "exact_match", "token_accuracy", "seconds")}
                for h in rec["history"]
            ],
        }

    result = {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        "shared with seven other engineers' jobs",
        "load_average_at_measure": os.getloadavg(),
        "runs": {n: run_info(n, m, r) for n, (m, r) in {**models, **tricks}.items()},
        "reverse": {
            "test_5_20": {n: full[n] for n in models},
            "test_length_20": {n: at20[n] for n in models},
            "lengths": lengths,
            "by_length": by_length,
            "per_length": PER_LENGTH,
            "connectivity_length_20": {n: _conn_summary(c) for n, c in conn.items()},
        },
        "reversal_trick": {
            "length": L,
            "test": ttest,
            "connectivity": {n: _conn_summary(c) for n, c in tconn.items()},
        },
        "measure_cpu_seconds": None,
    }
    result["measure_cpu_seconds"] = round(time.process_time() - c0, 1)
    with open(JSON_OUT, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps({k: result[k] for k in ("reverse", "reversal_trick")}, indent=None)[:3000])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--only",
        choices=(
            "train-attn",
            "train-none",
            "train-trick",
            "train-trick-plain",
            "train-trick-reversed",
            "measure",
        ),
    )
    a = p.parse_args()
    if a.only != "measure":
        train(a.only)
    if a.only in (None, "measure"):
        measure()
