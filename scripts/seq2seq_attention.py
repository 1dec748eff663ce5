"""The numbers of docs/seq2seq.md "Attention on real examples" and docs/interventions.md
"Sequence-to-sequence models", from a trained checkpoint (dates or reverse, with attention).

    python scripts/seq2seq_attention.py runs/dates.safetensors > dates.json
    python scripts/seq2seq_attention.py runs/reverse.safetensors > reverse.json

alignment: `gatescope.inspect.seq2seq.attention_alignment` on real decodes (dates: 40 random
days in each of the 11 formats; reverse: 200 held-out strings). causal: teacher-forced
accuracy with attention weights edited by `gi.intervene` (dates: the weights on a field and
the character after it set to 0, against as many on characters outside every field;
reverse: every row clamped one-hot on the anti-diagonal, or one position right of it).
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import numpy as np

from gatescope import inspect as gi
from gatescope.cli.seq2seq import load
from gatescope.inspect.seq2seq import ISO_FIELDS, attention_alignment, date_fields
from gatescope.tasks.seq2seq import DATE_FORMATS, FIRST_DAY, N_DAYS, _fmt


def _dates(n_days: int, seed: int) -> tuple[list[str], list[str]]:
    days = np.random.default_rng(seed).integers(0, N_DAYS, n_days)
    dates = [FIRST_DAY + dt.timedelta(days=int(k)) for k in days]
    return [_fmt(d, f) for f in DATE_FORMATS for d in dates], [
        d.isoformat() for _ in DATE_FORMATS for d in dates
    ]


def _accuracy(logits: np.ndarray, tgt: np.ndarray) -> dict[str, float]:
    pred = logits.argmax(-1)  # (B, T)
    out = {f: float((pred[:, s] == tgt[:, s]).mean()) for f, s in ISO_FIELDS.items()}
    return out | {"whole date": float((pred == tgt).all(axis=1).mean())}


def dates_causal(model, task, n_days: int = 30, seed: int = 1) -> dict:
    texts, isos = _dates(n_days, seed)
    src, tgt = task.encode(texts), task.encode(isos, side="tgt", eos=True)
    rng = np.random.default_rng(seed)
    B, S = src.shape
    fields = [date_fields(t) for t in texts]
    out = {"clean": _accuracy(gi.intervene(model, (src, tgt), []), tgt)}
    for name in ("year", "month", "day", "weekday"):
        rows = [b for b, f in enumerate(fields) if name in f]
        keep = np.ones((len(rows), 1, S))  # scale of every weight: 0 on the field and next
        ctrl = np.ones((len(rows), 1, S))  # as many zeros outside every field
        for i, b in enumerate(rows):
            n = len(texts[b])
            on = [j for j in [*fields[b][name], fields[b][name][-1] + 1] if j < n]
            keep[i, 0, on] = 0
            inside = {j for v in fields[b].values() for j in [*v, v[-1] + 1]}
            other = [j for j in range(n) if j not in inside]
            if other:  # (ISO dates have none: every character is in or after a field)
                ctrl[i, 0, rng.choice(other, size=min(len(on), len(other)), replace=False)] = 0
        pair = (src[rows], tgt[rows])
        out[f"{name} and next: 0"] = _accuracy(
            gi.intervene(model, pair, [gi.Edit("attention", scale=keep)]), tgt[rows]
        ) | {"n": len(rows)}
        out[f"control for {name}"] = _accuracy(
            gi.intervene(model, pair, [gi.Edit("attention", scale=ctrl)]), tgt[rows]
        )
    return out


def reverse_causal(model, task, n: int = 300, seed: int = 2) -> dict:
    pairs = task.pairs(n, np.random.default_rng(seed), heldout=True)
    src = task.encode([s for s, _ in pairs])
    tgt = task.encode([t for _, t in pairs], side="tgt", eos=True)
    B, S = src.shape
    lengths = np.array([len(s) for s, _ in pairs])
    chars = np.arange(tgt.shape[1])[None, :] < lengths[:, None]  # (B, T) the letters

    def accuracy(logits: np.ndarray) -> dict[str, float]:
        right = logits.argmax(-1) == tgt
        return {
            "letters": float(right[chars].mean()),
            "exact": float((right | ~chars).all(1).mean()),
        }

    out = {"clean": accuracy(gi.intervene(model, (src, tgt), []))}
    Tm = int(lengths.max())
    for name, offset in (("one-hot on the anti-diagonal", 0), ("one-hot one right of it", 1)):
        value = np.zeros((B, Tm, S))  # rows past a string's end (its EOS step): all 0
        for b, m in enumerate(lengths):
            t = np.arange(m)
            value[b, t, np.minimum(m - 1 - t + offset, m - 1)] = 1.0
        edit = gi.Edit("attention", steps=slice(0, Tm), value=value)
        out[name] = accuracy(gi.intervene(model, (src, tgt), [edit]))
    return out


def main(path: str) -> dict:
    model, task, meta = load(path)
    if task.name == "dates":
        texts, _ = _dates(40, 0)
        causal = dates_causal(model, task)
    else:
        texts = [s for s, _ in task.pairs(200, np.random.default_rng(0), heldout=True)]
        causal = reverse_causal(model, task)
    alignment = attention_alignment(model, task, texts)
    alignment.pop("per_text")
    return {"checkpoint": path, "step": meta.get("step"), "alignment": alignment, "causal": causal}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), indent=1))
