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

Prints a table and writes docs/img/charlm_vs_torch.png (the README's figure).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import gatescope as gs
from gatescope import charlm as cl


def torch_model(model: cl.CharLM) -> tuple[torch.nn.Module, torch.nn.Linear, list]:
    rnn = gs.to_torch(model.rnn)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size,
                           dtype=getattr(torch, model.config.dtype))  # fmt: skip
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(model.params["head.weight"]))
        head.bias.copy_(torch.from_numpy(model.params["head.bias"]))
    for name, p in rnn.named_parameters():
        if name.startswith("bias_hh"):
            p.requires_grad_(False)  # gatescope has one bias per layer: b_ih stands for it
    params = [p for p in [*rnn.parameters(), *head.parameters()] if p.requires_grad]
    return rnn, head, params


def copy_back(rnn: torch.nn.Module, head: torch.nn.Linear, config: cl.CharLMConfig) -> cl.CharLM:
    model = cl.CharLM(config)
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
    args = ap.parse_args()

    cl.limit_blas_threads(1)
    torch.set_num_threads(1)
    corpus = cl.load_corpus(cl.CorpusSpec())
    config = cl.CharLMConfig(corpus.vocab.size, "lstm", args.hidden, args.layers, args.dtype)
    train_cfg = cl.CharTrainConfig(
        batch_size=args.batch,
        seq_len=args.seq_len,
        lr=args.lr,
        lr_decay=1.0,  # a constant learning rate, as torch.optim.Adam alone has
        clip=args.clip,
        eval_every=args.eval_every,
        eval_chars=args.eval_chars,
        sample_every=0,
    )
    ours = cl.CharTrainer(cl.CharLM(config, seed=0), corpus, train_cfg)
    rnn, head, params = torch_model(ours.model)
    opt = torch.optim.Adam(params, lr=args.lr)
    val_ids = cl.validation_windows(corpus.val_ids, args.eval_chars)  # what ours.validate() reads
    eye = torch.eye(config.vocab_size, dtype=getattr(torch, args.dtype))
    state = None
    print(
        f"corpus: {corpus.train_ids.size:,} training chars, validation "
        f"{val_ids[:, 1:].size:,} predictions; lstm {args.layers}x{args.hidden} {args.dtype}, B={args.batch}, "
        f"T={args.seq_len}, Adam lr {args.lr:g}, clip {args.clip:g}"
    )
    rows = [(0, ours.validate(), cl.bits_per_char(copy_back(rnn, head, config), val_ids)[0], 0.0)]
    t_ours = t_torch = 0.0
    print(f"{'step':>6} {'gatescope':>10} {'pytorch':>10} {'|diff|':>8} {'max |dw|':>10}")
    print(f"{0:>6} {rows[0][1]:>10.4f} {rows[0][2]:>10.4f} {abs(rows[0][1] - rows[0][2]):>8.4f}")
    for step in range(1, args.steps + 1):
        k = (step - 1) % ours.batcher.num_batches
        x, y = ours.batcher.batch(k)
        t0 = time.perf_counter()
        ours.train_step()
        t1 = time.perf_counter()
        if k == 0:
            state = None
        out, state = rnn(eye[torch.from_numpy(x)], state)
        state = tuple(s.detach() for s in state)  # truncated BPTT: carry, don't backprop
        logits = head(out)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, config.vocab_size), torch.from_numpy(y).reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        t2 = time.perf_counter()
        t_ours, t_torch = t_ours + t1 - t0, t_torch + t2 - t1
        if step % args.eval_every == 0 or step == args.steps:
            theirs = copy_back(rnn, head, config)
            dw = max(
                float(np.abs(theirs.params[n] - v).max()) for n, v in ours.model.params.items()
            )
            rows.append((step, ours.validate(), cl.bits_per_char(theirs, val_ids)[0], dw))
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
