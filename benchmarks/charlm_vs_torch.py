"""Correctness at scale: the char-LM trained by gatescope and by PyTorch, side by side.

Both start from gatescope's initialisation (exported with `gs.to_torch`), read the same
batches from the same corpus (truncated BPTT, the state carried across batches), use Adam
with the same hyper-parameters and the same gradient-norm clipping. Every `--eval-every`
steps both are measured by the *same* code (`gatescope.charlm.bits_per_char`, the PyTorch
weights copied back with `gs.from_torch`), so any gap comes from training alone.

PyTorch keeps two bias vectors per layer (b_ih, b_hh) that always appear summed; gatescope
keeps one. Adam would move each of torch's two by a full step, so b_hh is frozen at zero
and b_ih plays the role of gatescope's single bias.

    .venv/bin/python benchmarks/charlm_vs_torch.py            # ~10 min on 2 busy cores
    .venv/bin/python benchmarks/charlm_vs_torch.py --steps 100 --hidden 32   # a quick look

Prints a table and writes docs/img/charlm_vs_torch.png (the figure of docs/interop.md).

Speed (`--speed`, and `bench.py`'s char-LM line): the training step of `gatescope charlm
train`'s default model (LSTM 2x128, one-hot input over a 100-symbol vocabulary, B = 32,
T = 64, Adam, clipping at 5) against PyTorch's same model (the same weights; the one-hot
input as rows of an identity matrix), timed in blocks (7 steps in a row, median; 3 blocks
each, alternating; the median of the block medians) at 1 thread and at all cores. The
batch is random ids: the time of a step does not depend on the text. Prints one line,
a row of bench.py's table:

    python benchmarks/charlm_vs_torch.py --speed               # 1 thread and all cores
    python benchmarks/charlm_vs_torch.py --speed --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import gatescope as gs
from gatescope import charlm as cl
from gatescope.model import SequenceModel
from gatescope.tasks.base import Batch
from gatescope.threads import limit_blas_threads
from gatescope.train import TrainConfig, train_step

# `gatescope charlm train`'s defaults (cli/charlm.py), and its default vocabulary cap
SPEED = {"hidden": 128, "layers": 2, "vocab": 100, "batch": 32, "seq_len": 64, "lr": 1e-2,
         "clip": 5.0}  # fmt: skip


def torch_model(model: SequenceModel) -> tuple[torch.nn.Module, torch.nn.Linear, list]:
    rnn = gs.to_torch(model.recurrent)
    head = torch.nn.Linear(model.config.hidden_size, model.config.output_size,
                           dtype=getattr(torch, model.config.dtype))  # fmt: skip
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(model.params["head.weight"]))
        head.bias.copy_(torch.from_numpy(model.params["head.bias"]))
    for name, p in rnn.named_parameters():
        if name.startswith("bias_hh"):
            p.requires_grad_(False)  # gatescope has one bias per layer: b_ih stands for it
    params = [p for p in [*rnn.parameters(), *head.parameters()] if p.requires_grad]
    return rnn, head, params


def torch_step(rnn, head, params, opt, eye, x, y, state, clip: float):
    """One PyTorch update of the same model: forward from the carried state, cross-entropy
    over every step, backward, gradient-norm clipping, Adam. Returns the state to carry."""
    out, state = rnn(eye[torch.from_numpy(x)], state)  # (B, T, H)
    state = tuple(s.detach() for s in state)  # truncated BPTT: carry, don't backprop
    logits = head(out)  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).reshape(-1)
    )
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return state


def speed_steppers(dtype: str = "float32", seed: int = 0) -> tuple[str, dict[str, Callable]]:
    """The char LM's training step in gatescope and in PyTorch (same weights, one batch of
    random ids, the state carried step to step): a name for the table and two callables."""
    c = SPEED
    model = cl.new_model(c["vocab"], "lstm", c["hidden"], c["layers"], dtype, seed=seed)
    ids = np.random.default_rng(seed).integers(0, c["vocab"], size=(c["batch"], c["seq_len"] + 1))
    batch = Batch(ids[:, :-1], ids[:, 1:])  # (B, T) ids in, (B, T) next ids out
    cfg = TrainConfig(batch_size=c["batch"], lr=c["lr"], clip_norm=c["clip"], carry_state=True,
                      early_stop=False)  # fmt: skip
    optimizer = cfg.make_optimizer(model.params)
    rnn, head, params = torch_model(model)
    opt = torch.optim.Adam(params, lr=c["lr"])
    eye = torch.eye(c["vocab"], dtype=getattr(torch, dtype))  # (V, V): one-hot rows
    carried: dict[str, object] = {"gatescope": None, "torch": None}

    def ours() -> None:
        train_step(model, optimizer, batch, cfg, carried["gatescope"])
        carried["gatescope"] = model.final_state

    def theirs() -> None:
        carried["torch"] = torch_step(rnn, head, params, opt, eye, batch.x, batch.y,
                                      carried["torch"], c["clip"])  # fmt: skip

    name = (f"char LM: LSTM {c['layers']}x{c['hidden']}, one-hot V={c['vocab']}, "
            f"B={c['batch']}, T={c['seq_len']}, train step")  # fmt: skip
    return name, {"gatescope": ours, "torch": theirs}


def speed(plan, threads: int) -> dict:
    """`bench.py`'s char-LM record at `threads` threads (the plan's dtype, calls, blocks)."""
    import bench

    bench.set_threads(threads)
    name, fns = speed_steppers(plan.dtype)
    raw = plan.time(fns, threads)
    rec = {"name": name, "threads": threads, "clock": bench.clock_name(plan.clock, threads)}
    for k in fns:
        s = bench.summary(raw[k])
        rec[k] = {"blocks": raw[k], "seconds": s, "steps_per_second": 1 / s}
    print(".", end="", file=sys.stderr, flush=True)
    return rec


def speed_main(args: argparse.Namespace) -> None:
    import bench

    plan = bench.Plan(archs=("lstm",), shapes=(), modes=("train",), dtype=args.dtype, calls=7,
                      blocks=3, method="blocks", clock="wall")  # fmt: skip
    threads = bench.parse_thread_counts(args.threads)
    recs = [speed(plan, n) for n in threads]
    cols = [(n, "train") for n in threads]
    print(file=sys.stderr)
    print(bench.charlm_row(recs, cols, args.dtype == "float32"))
    for r in recs:
        print(f"# {r['threads']} thread(s): gatescope {r['gatescope']['steps_per_second']:.1f} "
              f"steps/s, PyTorch {r['torch']['steps_per_second']:.1f} steps/s", file=sys.stderr)  # fmt: skip


def copy_back(rnn: torch.nn.Module, head: torch.nn.Linear, config) -> SequenceModel:
    model = SequenceModel(config)
    back = gs.from_torch(rnn)
    for k, v in back.params.items():
        model.params[f"rnn.{k}"][...] = v
    model.params["head.weight"][...] = head.weight.detach().numpy()
    model.params["head.bias"][...] = head.bias.detach().numpy()
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-chars", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument(
        "--out", default=str(Path(__file__).parents[1] / "docs" / "img" / "charlm_vs_torch.png")
    )
    ap.add_argument("--speed", action="store_true", help="only time the training steps")
    ap.add_argument("--threads", default="1,all", help="--speed: thread counts (default 1,all)")
    args = ap.parse_args()
    if args.speed:
        return speed_main(args)

    limit_blas_threads(1).__enter__()  # for the whole run
    torch.set_num_threads(1)
    corpus = cl.load_corpus(cl.CorpusSpec())
    task = cl.TextTask(corpus, seq_len=args.seq_len, eval_chars=args.eval_chars)
    model = cl.new_model(corpus.vocab.size, "lstm", args.hidden, args.layers, args.dtype, seed=0)
    config = model.config
    train_cfg = TrainConfig(  # a constant learning rate, as torch.optim.Adam alone has
        steps=args.steps, batch_size=args.batch, lr=args.lr, clip_norm=args.clip,
        carry_state=True, early_stop=False,
    )  # fmt: skip
    optimizer = train_cfg.make_optimizer(model.params)
    rnn, head, params = torch_model(model)
    opt = torch.optim.Adam(params, lr=args.lr)
    val_ids = task.validation_ids()  # what train.fit measures
    eye = torch.eye(config.input_size, dtype=getattr(torch, args.dtype))
    state = ours_state = None
    print(
        f"corpus: {corpus.train_ids.size:,} training chars, validation "
        f"{val_ids[:, 1:].size:,} predictions; lstm {args.layers}x{args.hidden} {args.dtype}, B={args.batch}, "
        f"T={args.seq_len}, Adam lr {args.lr:g}, clip {args.clip:g}"
    )

    def validate(m: SequenceModel) -> float:
        return cl.bits_per_char(m, val_ids)[0]

    rows = [(0, validate(model), validate(copy_back(rnn, head, config)), 0.0)]
    t_ours = t_torch = 0.0
    print(f"{'step':>6} {'gatescope':>10} {'pytorch':>10} {'|diff|':>8} {'max |dw|':>10}")
    print(f"{0:>6} {rows[0][1]:>10.4f} {rows[0][2]:>10.4f} {abs(rows[0][1] - rows[0][2]):>8.4f}")
    for step in range(1, args.steps + 1):
        batch = task.batch_at(step - 1, args.batch)
        x, y = batch.x, batch.y
        if task.pass_starts(step - 1, args.batch):
            state = ours_state = None
        t0 = time.perf_counter()
        train_step(model, optimizer, batch, train_cfg, ours_state)  # what train.fit does
        ours_state = model.final_state
        t1 = time.perf_counter()
        state = torch_step(rnn, head, params, opt, eye, x, y, state, args.clip)
        t2 = time.perf_counter()
        t_ours, t_torch = t_ours + t1 - t0, t_torch + t2 - t1
        if step % args.eval_every == 0 or step == args.steps:
            theirs = copy_back(rnn, head, config)
            dw = max(float(np.abs(theirs.params[n] - v).max()) for n, v in model.params.items())
            rows.append((step, validate(model), validate(theirs), dw))
            s, a, b, d = rows[-1]
            print(f"{s:>6} {a:>10.4f} {b:>10.4f} {abs(a - b):>8.4f} {d:>10.2e}", flush=True)
    n = args.steps
    print(
        f"training time per step: gatescope {1000 * t_ours / n:.0f} ms, "
        f"pytorch {1000 * t_torch / n:.0f} ms (1 thread each)"
    )
    gaps = [abs(a - b) for _, a, b, _ in rows]
    print(f"largest validation gap {max(gaps):.4f} bits/char; final {gaps[-1]:.4f}")
    plot(rows, args, Path(args.out))
    print(f"wrote {args.out}")


def plot(rows, args, path: Path) -> None:
    from matplotlib.figure import Figure

    steps = [r[0] for r in rows]
    fig = Figure(figsize=(6, 3.6), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps, [r[1] for r in rows], "o-", ms=3, label="gatescope (NumPy)")
    ax.plot(steps, [r[2] for r in rows], "x--", ms=4, label="PyTorch, same init and batches")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation bits per character")
    ax.set_title(
        f"char-LM, LSTM {args.layers}x{args.hidden} {args.dtype} on the Python stdlib",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
