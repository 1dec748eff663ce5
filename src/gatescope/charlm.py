r"""The character-level language model: functions on the one model and training stack.

A char LM is a `gatescope.model.SequenceModel` with int-id input (``encoding="one_hot"`` or
``"embedding"``) and a head at every step (kind ``"classify_steps"``), trained by
`gatescope.train.fit` on a `gatescope.tasks.text.TextTask` with ``carry_state=True``
(truncated backprop through time: the final state of batch k is the initial state of batch
k + 1, with no gradient into it, reset at each pass over the text). This module holds what
only a language model does with it:

- `new_model`: a fresh char LM with the command line's defaults.
- `bits_per_char`: mean -log2 p(next char) over a text, read as streams with the state
  carried chunk by chunk; `gatescope.train.fit` measures text tasks with it.
- `sample`: generated text; `run_states`: the per-character trace of a text read as one
  stream (what `gatescope.inspect.units` correlates with features of the text).
- `load_charlm`: `gatescope.model.load_model` for a file that holds a char LM (this
  version's or gatescope 0.1.0's), with its vocabulary.

The text itself (corpus, vocabulary, streams) lives in `gatescope.tasks.text`; its names are
re-exported here.

Shapes: B batch (streams), T time (chunk length), V vocabulary, H hidden, L layers, N chars.
Bits per character = mean negative log2-likelihood of each next character = nats / ln 2.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .checkpoint import CheckpointError
from .model import SequenceModel, load_model
from .nn import log_softmax
from .nn.checks import Seed, as_generator, check_positive_int
from .tasks.text import (
    UNK,
    Corpus,
    CorpusSpec,
    StreamBatcher,
    TextTask,
    Vocab,
    default_corpus_root,
    find_text_files,
    load_corpus,
    read_text_file,
    validation_windows,
    vocab_from_meta,
)

__all__ = [
    "UNK",
    "Corpus",
    "CorpusSpec",
    "StreamBatcher",
    "TextTask",
    "Vocab",
    "bits_per_char",
    "default_corpus_root",
    "find_text_files",
    "is_charlm",
    "load_charlm",
    "load_corpus",
    "new_model",
    "read_text_file",
    "run_states",
    "sample",
    "validation_windows",
]

LN2 = math.log(2.0)


def new_model(
    vocab_size: int,
    arch: str = "lstm",
    hidden_size: int = 128,
    num_layers: int = 2,
    dtype: str = "float32",
    seed: Seed = 0,
    encoding: str = "one_hot",
    embed_size: int | None = None,
) -> SequenceModel:
    """A freshly initialised char LM over ``vocab_size`` symbols (V in, V out, every step)."""
    if check_positive_int("vocab_size", vocab_size) < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    return SequenceModel.build(
        arch=arch,
        input_size=vocab_size,
        hidden_size=hidden_size,
        output_size=vocab_size,
        kind="classify_steps",
        num_layers=num_layers,
        seed=seed,
        dtype=dtype,
        encoding=encoding,
        embed_size=embed_size,
    )


def is_charlm(meta: dict[str, Any]) -> bool:
    """True when a model file's metadata (`load_model`'s) describes a char LM."""
    task = meta.get("task")
    return isinstance(task, dict) and task.get("name") == TextTask.name and "vocab" in meta


def load_charlm(path: str | os.PathLike[str]) -> tuple[SequenceModel, Vocab, dict[str, Any]]:
    """A trained char LM, its vocabulary and the checkpoint's metadata (`load_model`'s)."""
    model, meta = load_model(path)
    if not is_charlm(meta):
        what = (meta.get("task") or {}).get("name") if isinstance(meta.get("task"), dict) else None
        raise CheckpointError(
            f"{os.fspath(path)}: not a character-level language model (a model of task "
            f"{what!r}); train one with `gatescope charlm train`"
        )
    try:
        vocab = vocab_from_meta(meta)
    except ValueError as e:
        raise CheckpointError(f"{os.fspath(path)}: corrupted char-LM metadata ({e})") from None
    if vocab.size != model.config.input_size or model.config.encoding == "dense":
        raise CheckpointError(
            f"{os.fspath(path)}: corrupted char-LM metadata (a vocabulary of {vocab.size} for a "
            f"model reading {model.config.input_size} {model.config.encoding} inputs)"
        )
    return model, vocab, meta


# ============================================================================ evaluation


def bits_per_char(
    model: SequenceModel, ids: np.ndarray, *, streams: int = 32, chunk: int = 256
) -> tuple[float, int]:
    """Mean -log2 p(next char) over `ids`: every char after the first is predicted once.

    1-D `ids` (N,): the N - 1 predictions are cut into `streams` contiguous pieces read in
    parallel (the last one padded, the padding masked out). 2-D `ids` (B, S + 1): each row
    is its own stream (see `validation_windows`). Every stream starts from the zero state
    and carries its state chunk by chunk. Returns (bits per char, number of predictions).
    """
    ids = np.asarray(ids, np.int64)
    T = check_positive_int("chunk", chunk)
    if ids.ndim == 2:
        if ids.shape[0] < 1 or ids.shape[1] < 2:
            raise ValueError(f"need rows of at least 2 characters, got shape {ids.shape}")
        x, y = ids[:, :-1], ids[:, 1:]
        mask = np.ones(x.shape, bool)
    elif ids.ndim == 1:
        n = ids.size - 1
        if n < 1:
            raise ValueError(f"need at least 2 characters to measure bits per char, got {ids.size}")
        B = min(check_positive_int("streams", streams), n)
        S = -(-n // B)  # ceil: predictions per stream
        x = np.zeros(B * S, np.int64)
        y = np.zeros(B * S, np.int64)
        mask = np.zeros(B * S, bool)
        x[:n], y[:n], mask[:n] = ids[:-1], ids[1:], True
        x, y, mask = x.reshape(B, S), y.reshape(B, S), mask.reshape(B, S)
    else:
        raise ValueError(f"ids must be 1-D (N,) or 2-D (streams, S + 1), got shape {ids.shape}")
    state, total = None, 0.0
    for t0 in range(0, x.shape[1], T):
        logits = model.forward(x[:, t0 : t0 + T], state)  # (B, T, V)
        state = model.final_state
        logp = log_softmax(logits.astype(np.float64))
        picked = np.take_along_axis(logp, y[:, t0 : t0 + T, None], -1)[..., 0]
        total -= float(picked[mask[:, t0 : t0 + T]].sum())
    n = int(mask.sum())
    return total / n / LN2, n


def _softmax_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    if temperature == 0:
        p = (z == z.max()).astype(np.float64)
    else:
        p = np.exp(log_softmax(z / temperature))
    return p / p.sum()


def sample(
    model: SequenceModel,
    vocab: Vocab,
    *,
    prime: str = "",
    length: int = 200,
    temperature: float = 1.0,
    seed: Seed = 0,
) -> str:
    """`length` characters generated after `prime` (which is not included in the result).

    The model first reads `prime` (a newline when it is empty) from the zero state; then each
    next character is drawn from softmax(logits / temperature) (the most likely one at
    temperature 0) and fed back in. The same seed gives the same text.
    """
    length = check_positive_int("length", length)
    if not (isinstance(temperature, int | float) and 0 <= temperature < math.inf):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    rng = as_generator(seed)
    ids = vocab.encode(prime or "\n")[None, :]  # (1, T)
    logits = model.forward(ids)  # (1, T, V)
    state, last = model.final_state, logits[0, -1]  # last: (V,)
    out = np.empty(length, np.int64)
    for t in range(length):
        cdf = np.cumsum(_softmax_probs(last, temperature))
        k = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        out[t] = min(k, cdf.size - 1)
        logits = model.forward(out[None, t : t + 1], state)
        state, last = model.final_state, logits[0, -1]
    return vocab.decode(out)


def run_states(model: SequenceModel, ids: np.ndarray, *, chunk: int = 512) -> dict[str, np.ndarray]:
    """Read `ids` as one stream (state carried) and return the trace of every character.

    name -> (L, N, H) array (LSTM i f g o c h; GRU r z n h; RNN h): entry [l, t] is layer
    l's value right after reading character t.
    """
    ids = np.asarray(ids, np.int64)
    if ids.size == 0:
        raise ValueError("need at least one character")
    T = check_positive_int("chunk", chunk)
    L, H = model.config.num_layers, model.config.hidden_size
    rnn = model.recurrent
    out = {n: np.empty((L, ids.size, H), model.dtype) for n in rnn.trace_names}
    state = None
    for t0 in range(0, ids.size, T):
        model.forward(ids[None, t0 : t0 + T], state)
        state = model.final_state
        for name, a in rnn.trace.items():  # (B=1, T, H) or (L, 1, T, H)
            out[name][:, t0 : t0 + T] = a.reshape(L, -1, H)
    return out
