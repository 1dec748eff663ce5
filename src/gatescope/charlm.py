r"""A character-level language model on real text, trained with truncated BPTT.

The pieces, in the order data flows through them:

- `load_corpus`: text files (or folders) -> a training and a validation text, split *by
  file* with a seeded shuffle; by default Python's own standard-library source.
- `Vocab`: characters of the training text (most frequent first up to a cap, then sorted by
  code point); index 0 is the one symbol for every unknown character.
- `StreamBatcher`: B parallel streams through the training text, each cut into chunks of T
  steps. Chunk k of stream b is `ids[b*S + k*T : b*S + (k+1)*T]` (S = len // B); batch k
  stacks chunk k of every stream, so row b of batch k+1 continues row b of batch k.
- `CharLM`: one-hot input -> stacked LSTM / GRU / RNN -> Linear head -> softmax over V.
- `CharTrainer`: truncated backprop through time. The final state of batch k is the initial
  state of batch k+1 (the model reads on), but no gradient flows back into it (the graph is
  cut at the chunk boundary); Adam with global gradient-norm clipping.
- `bits_per_char`, `sample`, `run_states`: evaluation, generation and the per-character
  states that `gatescope.inspect.units` correlates with features of the text.

Shapes: B batch (streams), T time (chunk length), V vocabulary, H hidden, L layers, N chars.
Bits per character = mean negative log2-likelihood of each next character = nats / ln 2.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import sysconfig
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, check_tensors, load_checkpoint, save_checkpoint
from .nn import Linear, RecurrentConfig, build_recurrent, cross_entropy, log_softmax
from .nn.checks import Seed, as_generator, check_positive_int
from .optim import Adam, clip_grad_norm

__all__ = [
    "CHECKPOINT_KIND",
    "CharLM",
    "CharLMConfig",
    "CharTrainConfig",
    "CharTrainer",
    "Corpus",
    "CorpusSpec",
    "StreamBatcher",
    "UNK",
    "Vocab",
    "bits_per_char",
    "default_corpus_root",
    "find_text_files",
    "fit",
    "limit_blas_threads",
    "load_charlm",
    "load_corpus",
    "read_text_file",
    "validation_windows",
    "run_states",
    "sample",
]

CHECKPOINT_KIND = "gatescope.charlm"
UNK = "\ufffd"  # how the unknown-character symbol (index 0) is written out
LN2 = math.log(2.0)
# left out of the default corpus: installed packages, test suites, and two folders of data
# tables rather than code (codec charmaps, the pydoc topics dump)
_SKIP_DIRS = {
    "site-packages",
    "__pycache__",
    "test",
    "tests",
    "idle_test",
    "encodings",
    "pydoc_data",
}


# ============================================================================ the corpus


def default_corpus_root() -> Path:
    """The running interpreter's standard-library source folder (`sysconfig`'s "stdlib")."""
    return Path(sysconfig.get_paths()["stdlib"])


def read_text_file(path: Path) -> str | None:
    """The file's text (UTF-8), or None when it is binary (a NUL byte) or not UTF-8."""
    data = Path(path).read_bytes()
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def find_text_files(paths: Sequence[str | os.PathLike[str]], glob: str | None = None) -> list[Path]:
    """Every file named in `paths`, and every file under the folders named there.

    Folders are walked recursively, skipping hidden entries and `__pycache__`; with `glob`
    (e.g. "*.py") only file names matching it are taken from folders (files named directly
    are always taken). Returns a sorted, de-duplicated list; ValueError if a path does not
    exist or nothing is found.
    """
    found: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ValueError(f"corpus path {str(raw)!r} does not exist")
        if p.is_file():
            found.add(p.resolve())
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for name in files:
                if name.startswith(".") or (glob and not fnmatch.fnmatch(name, glob)):
                    continue
                found.add((Path(root) / name).resolve())
    if not found:
        where = ", ".join(repr(str(p)) for p in paths)
        raise ValueError(f"no files found in {where}" + (f" matching {glob!r}" if glob else ""))
    return sorted(found)


def _default_files() -> list[Path]:
    """The standard library's *.py files, without site-packages, tests and data tables."""
    root = default_corpus_root()
    if not root.is_dir():
        raise ValueError(f"the standard-library folder {str(root)!r} does not exist")
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        out.extend(Path(dirpath) / f for f in files if f.endswith(".py"))
    if not out:
        raise ValueError(f"no *.py files under the standard-library folder {str(root)!r}")
    return sorted(out)


@dataclass(frozen=True)
class Vocab:
    """Characters <-> integer ids. `chars[i]` is the character of id i + 1; id 0 is unknown."""

    chars: str  # the known characters, sorted by code point, no duplicates

    def __post_init__(self) -> None:
        cps = [ord(c) for c in self.chars]
        if cps != sorted(set(cps)):
            raise ValueError("vocab chars must be distinct and sorted by code point")

    @property
    def size(self) -> int:
        """V: the known characters plus the unknown symbol."""
        return len(self.chars) + 1

    @classmethod
    def build(cls, text: str, max_size: int = 100, min_count: int = 1) -> Vocab:
        """The `max_size - 1` most frequent characters seen at least `min_count` times."""
        check_positive_int("min_count", min_count)
        if check_positive_int("max_size", max_size) < 2:
            raise ValueError(f"max_size must be at least 2 (unknown + one char), got {max_size}")
        cps, counts = np.unique(_code_points(text), return_counts=True)
        keep = counts >= min_count
        cps, counts = cps[keep], counts[keep]
        order = np.lexsort((cps, -counts))[: max_size - 1]  # by count, ties by code point
        return cls("".join(chr(c) for c in sorted(cps[order].tolist())))

    def encode(self, text: str) -> np.ndarray:
        """text -> ids (N,) int64; characters outside the vocabulary become 0."""
        cps = _code_points(text)
        known = np.array([ord(c) for c in self.chars], np.int64)
        pos = np.searchsorted(known, cps)
        hit = pos < len(known)
        hit[hit] = known[pos[hit]] == cps[hit]
        return np.where(hit, pos + 1, 0).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        table = UNK + self.chars
        return "".join(table[int(i)] for i in ids)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.int64)


@dataclass(frozen=True)
class CorpusSpec:
    """Where the text comes from and how it is split; stored in the checkpoint."""

    paths: tuple[str, ...] = ()  # files or folders; empty: the standard library's *.py
    glob: str | None = None  # only file names matching this are taken from folders
    val_fraction: float = 0.05  # share of the characters held out, whole files at a time
    seed: int = 0  # seeds the file shuffle that decides the split
    max_vocab: int = 100  # V at most, the unknown symbol included
    min_count: int = 1  # a character needs this many occurrences in training text

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        check_positive_int("max_vocab", self.max_vocab)
        check_positive_int("min_count", self.min_count)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["paths"] = list(self.paths)
        return d


@dataclass
class Corpus:
    """The training and validation texts, encoded, and where they came from."""

    spec: CorpusSpec
    vocab: Vocab
    train_files: list[str]
    val_files: list[str]
    train_ids: np.ndarray  # (N_train,) int64
    val_ids: np.ndarray  # (N_val,) int64
    skipped_files: int  # empty, binary or non-UTF-8 files left out
    fingerprint: str  # sha256 of both texts: a resumed run checks it has the same corpus

    @property
    def unknown_fraction(self) -> float:
        ids = self.val_ids
        return float((ids == 0).mean()) if ids.size else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "files": len(self.train_files) + len(self.val_files),
            "train_files": len(self.train_files),
            "val_files": len(self.val_files),
            "train_chars": int(self.train_ids.size),
            "val_chars": int(self.val_ids.size),
            "vocab_size": self.vocab.size,
            "skipped_files": self.skipped_files,
            "val_unknown_fraction": self.unknown_fraction,
            "fingerprint": self.fingerprint,
        }


def load_corpus(spec: CorpusSpec = CorpusSpec(), vocab: Vocab | None = None) -> Corpus:
    """Read, split and encode the text. With `vocab` (from a checkpoint) it is reused.

    The files are sorted by path, shuffled with `spec.seed`, and taken into the validation
    set until it holds `spec.val_fraction` of the characters (at least one file, never all);
    the rest is the training set, in the shuffled order. A single file is split at the line boundary
    nearest to the same fraction instead (reported as 1 + 1 files).
    """
    files = find_text_files(spec.paths, spec.glob) if spec.paths else _default_files()
    texts: list[tuple[str, str]] = []
    skipped = 0
    for f in files:
        text = read_text_file(f)
        if not text:  # empty, binary or not UTF-8
            skipped += 1
            continue
        texts.append((str(f), text))
    if not texts:
        raise ValueError(f"no readable UTF-8 text among the {len(files)} corpus file(s)")
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(texts))
    total = sum(len(t) for _, t in texts)
    if len(texts) == 1:
        name, text = texts[0]
        cut = int(len(text) * (1 - spec.val_fraction))
        nl = text.rfind("\n", 0, cut)
        cut = nl + 1 if nl > 0 else cut
        train_parts, val_parts = [(name, text[:cut])], [(name, text[cut:])]
    else:
        val_parts, n_val = [], 0
        for i in order[:-1]:  # the last file in the shuffled order always trains
            if n_val >= spec.val_fraction * total and val_parts:
                break
            val_parts.append(texts[i])
            n_val += len(texts[i][1])
        taken = {name for name, _ in val_parts}
        train_parts = [texts[i] for i in order if texts[i][0] not in taken]
    train_text = "".join(t for _, t in train_parts)
    val_text = "".join(t for _, t in val_parts)
    if len(train_text) < 2 or len(val_text) < 2:
        raise ValueError(
            f"the corpus is too small to split ({len(train_text)} training and "
            f"{len(val_text)} validation characters)"
        )
    if vocab is None:
        vocab = Vocab.build(train_text, spec.max_vocab, spec.min_count)
    digest = hashlib.sha256(train_text.encode("utf-8", "surrogatepass"))
    digest.update(b"\x00validation\x00")
    digest.update(val_text.encode("utf-8", "surrogatepass"))
    return Corpus(
        spec=spec,
        vocab=vocab,
        train_files=[n for n, _ in train_parts],
        val_files=[n for n, _ in val_parts],
        train_ids=vocab.encode(train_text),
        val_ids=vocab.encode(val_text),
        skipped_files=skipped,
        fingerprint=digest.hexdigest()[:32],
    )


# ============================================================================ batching


class StreamBatcher:
    """B parallel streams through `ids`, read T characters at a time.

    The text is cut into B equal streams of S = len(ids) // B characters (the remainder is
    dropped); stream b is `ids[b*S:(b+1)*S]`. Batch k is (x, y), both (B, T):
    `x[b] = stream_b[k*T:(k+1)*T]` and `y[b] = stream_b[k*T+1:(k+1)*T+1]` (the next
    characters). Batch k+1 continues every row of batch k, so the recurrent state at the end
    of one batch is the right initial state for the next. `num_batches` = (S - 1) // T.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int) -> None:
        B = check_positive_int("batch_size", batch_size)
        T = check_positive_int("seq_len", seq_len)
        ids = np.asarray(ids)
        S = ids.size // B
        if S < T + 1:
            raise ValueError(
                f"the training text ({ids.size} chars) is too short for batch_size={B} streams "
                f"of seq_len={T} (each stream needs at least {T + 1} chars)"
            )
        self.batch_size, self.seq_len = B, T
        self.streams = ids[: B * S].reshape(B, S)  # (B, S)
        self.num_batches = (S - 1) // T

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch k (0 <= k < num_batches): inputs x and targets y, each (B, T) int64."""
        if not 0 <= k < self.num_batches:
            raise ValueError(f"batch index must be in [0, {self.num_batches}), got {k}")
        T = self.seq_len
        return self.streams[:, k * T : (k + 1) * T], self.streams[:, k * T + 1 : (k + 1) * T + 1]


# ============================================================================ the model


@dataclass(frozen=True)
class CharLMConfig:
    """The architecture of a character-level language model."""

    vocab_size: int  # V: input one-hot size and number of output classes
    arch: str = "lstm"  # "lstm", "gru" or "rnn"
    hidden_size: int = 128  # H: units per recurrent layer
    num_layers: int = 2  # L: stacked recurrent layers
    dtype: str = "float32"  # parameters and computation

    def __post_init__(self) -> None:
        if check_positive_int("vocab_size", self.vocab_size) < 2:
            raise ValueError(f"vocab_size must be at least 2, got {self.vocab_size}")
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("num_layers", self.num_layers)
        self.recurrent_config()  # validates arch and dtype

    def recurrent_config(self) -> RecurrentConfig:
        V, H, L = self.vocab_size, self.hidden_size, self.num_layers
        return RecurrentConfig(self.arch, V, H, L, dtype=self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CharLM:
    """One-hot characters -> recurrent stack -> Linear head -> logits over the vocabulary.

    `params` / `grads` hold the recurrent layer's arrays under "rnn.<name>" and the head's
    under "head.weight" / "head.bias" (the same array objects, so an optimizer updating
    `params` in place updates the layers).
    """

    def __init__(self, config: CharLMConfig, seed: Seed = 0) -> None:
        rng = as_generator(seed)
        self.config = config
        self.rnn = build_recurrent(config.recurrent_config(), seed=rng)
        self.head = Linear(config.hidden_size, config.vocab_size, seed=rng, dtype=config.dtype)
        self.dtype = self.rnn.dtype
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        for prefix, part in (("rnn", self.rnn), ("head", self.head)):
            for k in part.params:
                self.params[f"{prefix}.{k}"] = part.params[k]
                self.grads[f"{prefix}.{k}"] = part.grads[k]
        self._eye = np.eye(config.vocab_size, dtype=self.dtype)  # (V, V): row i = one-hot(i)

    def num_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def zero_state(self, batch_size: int) -> Any:
        return self.rnn.zero_state(batch_size)

    def one_hot(self, ids: np.ndarray) -> np.ndarray:
        """ids (B, T) -> (B, T, V) one-hot in the model's dtype."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be integer character ids, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.config.vocab_size})")
        return self._eye[ids]

    def forward(self, ids: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        """ids (B, T) -> logits (B, T, V) and the final recurrent state."""
        y, state = self.rnn(self.one_hot(ids), state)  # y (B, T, H)
        return self.head(y), state

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray, state: Any = None) -> tuple[float, Any]:
        """Forward and backward on one chunk: mean cross-entropy in nats, final state.

        Fills `grads`. The incoming `state` is treated as a constant (truncated BPTT): no
        gradient is propagated into it, and the returned state carries no history.
        """
        logits, state = self.forward(x, state)  # (B, T, V)
        loss, dlogits = cross_entropy(logits, np.asarray(y))
        self.rnn.backward(self.head.backward(dlogits))
        return loss, state

    # -- the carried state as flat (L, B, H) arrays, for checkpoints ------------------------

    def state_arrays(self, state: Any) -> dict[str, np.ndarray]:
        parts = state if isinstance(state, tuple) else (state,)
        L, H = self.config.num_layers, self.config.hidden_size
        return {n: np.asarray(a).reshape(L, -1, H) for n, a in zip(self.rnn.state_names, parts)}

    def state_from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        parts = []
        for n in self.rnn.state_names:
            a = np.asarray(arrays[n], dtype=self.dtype)  # (L, B, H)
            parts.append(a[0] if self.config.num_layers == 1 else a)
        return parts[0] if len(parts) == 1 else tuple(parts)


# ============================================================================ evaluation


def bits_per_char(
    model: CharLM, ids: np.ndarray, *, streams: int = 32, chunk: int = 256
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
        logits, state = model.forward(x[:, t0 : t0 + T], state)  # (B, T, V)
        logp = log_softmax(logits.astype(np.float64))
        picked = np.take_along_axis(logp, y[:, t0 : t0 + T, None], -1)[..., 0]
        total -= float(picked[mask[:, t0 : t0 + T]].sum())
    n = int(mask.sum())
    return total / n / LN2, n


def validation_windows(ids: np.ndarray, n_chars: int, streams: int = 32) -> np.ndarray:
    """(B, L + 1): B windows spread evenly over `ids`, about `n_chars` predictions in all.

    Measuring these instead of the first `n_chars` characters samples every part of the
    validation text (files differ: a table of Unicode ranges is harder than a class).
    Windows never share a predicted character.
    """
    ids = np.asarray(ids, np.int64)
    N = ids.size
    if N < 2:
        raise ValueError(f"need at least 2 characters, got {N}")
    B = min(check_positive_int("streams", streams), N - 1)
    L = max(1, min(check_positive_int("n_chars", n_chars) // B, (N - 1) // B))
    starts = np.linspace(0, N - L - 1, B).round().astype(np.int64)
    return ids[starts[:, None] + np.arange(L + 1)]


def _softmax_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    if temperature == 0:
        p = (z == z.max()).astype(np.float64)
    else:
        p = np.exp(log_softmax(z / temperature))
    return p / p.sum()


def sample(
    model: CharLM,
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
    logits, state = model.forward(ids, None)
    last = logits[0, -1]  # (V,)
    out = np.empty(length, np.int64)
    for t in range(length):
        cdf = np.cumsum(_softmax_probs(last, temperature))
        k = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        out[t] = min(k, cdf.size - 1)
        logits, state = model.forward(out[None, t : t + 1], state)
        last = logits[0, -1]
    return vocab.decode(out)


def run_states(model: CharLM, ids: np.ndarray, *, chunk: int = 512) -> dict[str, np.ndarray]:
    """Read `ids` as one stream (state carried) and return the trace of every character.

    name -> (L, N, H) array (LSTM i f g o c h; GRU r z n h; RNN h): entry [l, t] is layer
    l's value right after reading character t.
    """
    ids = np.asarray(ids, np.int64)
    if ids.size == 0:
        raise ValueError("need at least one character")
    T = check_positive_int("chunk", chunk)
    L, H = model.config.num_layers, model.config.hidden_size
    out = {n: np.empty((L, ids.size, H), model.dtype) for n in model.rnn.trace_names}
    state = None
    for t0 in range(0, ids.size, T):
        _, state = model.forward(ids[None, t0 : t0 + T], state)
        for name, a in model.rnn.trace.items():  # (B=1, T, H) or (L, 1, T, H)
            out[name][:, t0 : t0 + T] = a.reshape(L, -1, H)
    return out


# ============================================================================ training


@dataclass(frozen=True)
class CharTrainConfig:
    """How to train; stored in the checkpoint so that a resumed run continues identically."""

    batch_size: int = 32  # B: parallel streams through the training text
    seq_len: int = 64  # T: characters per truncated-BPTT chunk
    lr: float = 1e-2  # Adam's initial learning rate
    clip: float = 5.0  # global gradient-norm clipping
    lr_decay: float = 0.5  # lr multiplier when a validation does not beat the best (1: off)
    min_gain: float = 0.0  # bits per char by which it must beat the best so far
    min_lr: float = 1e-4  # the decay stops here
    seed: int = 0  # model initialisation (the corpus split has its own seed)
    eval_every: int = 100  # steps between validation measurements (and checkpoints)
    eval_chars: int = 50_000  # validation characters measured each time (spread evenly)
    sample_every: int = 500  # steps between printed samples (0: never)
    sample_chars: int = 300  # length of those samples

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_len", "eval_every", "eval_chars", "sample_chars"):
            check_positive_int(name, getattr(self, name))
        if self.sample_every < 0:
            raise ValueError(f"sample_every must be >= 0, got {self.sample_every}")
        if not (isinstance(self.lr_decay, int | float) and 0 < self.lr_decay <= 1):
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if not (isinstance(self.min_gain, int | float) and 0 <= self.min_gain < math.inf):
            raise ValueError(f"min_gain must be a finite number >= 0, got {self.min_gain!r}")
        for name in ("lr", "clip", "min_lr"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 < v < math.inf):
                raise ValueError(f"{name} must be a positive number, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CharTrainer:
    """Model, optimizer, data and the carried state: everything a step or a resume needs.

    Step s trains on batch `s % num_batches`; at the start of each pass over the text the
    carried state is reset to zero. `step`, `seconds` and `history` survive a resume.
    """

    model: CharLM
    corpus: Corpus
    config: CharTrainConfig
    optimizer: Adam = field(init=False)
    batcher: StreamBatcher = field(init=False)
    state: Any = field(init=False)
    step: int = 0
    seconds: float = 0.0  # training wall time so far, over all runs
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.model.config.vocab_size != self.corpus.vocab.size:
            raise ValueError(
                f"model vocab_size {self.model.config.vocab_size} != corpus vocabulary "
                f"{self.corpus.vocab.size}"
            )
        self.optimizer = Adam(self.model.params, lr=self.config.lr)
        self.batcher = StreamBatcher(
            self.corpus.train_ids, self.config.batch_size, self.config.seq_len
        )
        self.state = self.model.zero_state(self.config.batch_size)

    @property
    def epoch(self) -> float:
        """Passes over the training text so far (fractional)."""
        return self.step / self.batcher.num_batches

    def train_step(self) -> float:
        """One truncated-BPTT step; returns the chunk's loss in bits per char."""
        k = self.step % self.batcher.num_batches
        if k == 0:
            self.state = self.model.zero_state(self.config.batch_size)
        x, y = self.batcher.batch(k)
        loss, self.state = self.model.loss_and_grad(x, y, self.state)
        norm = clip_grad_norm(self.model.grads, self.config.clip)
        if math.isfinite(norm) and math.isfinite(loss):
            self.optimizer.step(self.model.grads)
        self.step += 1
        return loss / LN2

    def validate(self) -> float:
        """Bits per char on about `eval_chars` validation characters, in 32 windows spread
        evenly over the validation text (`validation_windows`)."""
        windows = validation_windows(self.corpus.val_ids, self.config.eval_chars)
        return bits_per_char(self.model, windows)[0]

    def plateau(self, val_bpc: float) -> bool:
        """Multiply the learning rate by `lr_decay` (not below `min_lr`) if `val_bpc` does
        not beat the best validation in `history` by more than `min_gain`; True if it did."""
        cfg = self.config
        best = min((row["val_bpc"] for row in self.history), default=math.inf)
        lr = self.optimizer.lr
        if cfg.lr_decay < 1 and lr > cfg.min_lr and val_bpc >= best - cfg.min_gain:
            self.optimizer.lr = max(lr * cfg.lr_decay, cfg.min_lr)
            return True
        return False

    # -- checkpoints ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        """Everything needed to sample, evaluate, inspect or resume, in one atomic file."""
        tensors = dict(self.model.params)
        tensors.update(self.optimizer.state_dict())
        for n, a in self.model.state_arrays(self.state).items():
            tensors[f"carry.{n}"] = a
        meta = {
            "kind": CHECKPOINT_KIND,
            "model": self.model.config.to_dict(),
            "vocab": {"chars": self.corpus.vocab.chars, "unknown": UNK},
            "train": self.config.to_dict(),
            "corpus": {**self.corpus.spec.to_dict(), **self.corpus.summary()},
            "step": self.step,
            "epoch": self.epoch,
            "seconds": self.seconds,
            "history": self.history,
            **(extra or {}),
        }
        save_checkpoint(path, tensors, meta)

    @classmethod
    def resume(
        cls, path: str | os.PathLike[str], corpus: Corpus | None = None
    ) -> tuple[CharTrainer, dict[str, Any]]:
        """Rebuild the trainer saved at `path` (re-reading its corpus unless given)."""
        model, meta, tensors = _load(path)
        if corpus is None:
            corpus = load_corpus(meta["corpus_spec"], vocab=meta["vocab_obj"])
        if corpus.fingerprint != meta["corpus"].get("fingerprint"):
            raise CheckpointError(
                f"{os.fspath(path)}: the corpus has changed since this checkpoint was written "
                "(files added, removed or edited); it cannot be resumed on this text"
            )
        trainer = cls(model, corpus, CharTrainConfig(**meta["train"]))
        trainer.optimizer.load_state_dict(
            {k: v for k, v in tensors.items() if k.startswith(f"{trainer.optimizer.name}.")}
        )
        carry = {n: tensors[f"carry.{n}"] for n in model.rnn.state_names}
        trainer.state = model.state_from_arrays(carry)
        trainer.step, trainer.seconds = int(meta["step"]), float(meta["seconds"])
        trainer.history = list(meta.get("history", []))
        return trainer, meta


def _load(path: str | os.PathLike[str]) -> tuple[CharLM, dict[str, Any], dict[str, np.ndarray]]:
    """Model (weights loaded), metadata (with "vocab_obj" and "corpus_spec" added), tensors."""
    tensors, meta = load_checkpoint(path)
    p = os.fspath(path)
    if meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(
            f"{p}: not a character-level language model (kind {meta.get('kind')!r}); "
            "train one with `gatescope charlm train`"
        )
    try:
        config = CharLMConfig(**meta["model"])
        vocab = Vocab(meta["vocab"]["chars"])
        if vocab.size != config.vocab_size:
            raise ValueError(f"vocabulary of {vocab.size} != vocab_size {config.vocab_size}")
        spec = {k: meta["corpus"][k] for k in CorpusSpec.__dataclass_fields__}
        spec = CorpusSpec(**{**spec, "paths": tuple(spec["paths"])})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: corrupted char-LM metadata ({e})") from None
    model = CharLM(config)
    weights = {k: v for k, v in tensors.items() if k.startswith(("rnn.", "head."))}
    check_tensors(p, weights, {k: v.shape for k, v in model.params.items()})
    for k, v in model.params.items():
        v[...] = weights[k]
    meta["vocab_obj"], meta["corpus_spec"] = vocab, spec
    return model, meta, tensors


def load_charlm(path: str | os.PathLike[str]) -> tuple[CharLM, Vocab, dict[str, Any]]:
    """A trained model, its vocabulary and the checkpoint's metadata."""
    model, meta, _ = _load(path)
    meta.pop("corpus_spec")
    return model, meta.pop("vocab_obj"), meta


def fit(
    trainer: CharTrainer,
    *,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Train until step `max_steps` (counted over all runs) or for `max_seconds` more.

    Every `eval_every` steps: validation bits per char appended to `trainer.history` and
    logged, and a checkpoint written (atomically) when `checkpoint_path` is given; every
    `sample_every` steps a sample is logged. The last step is always evaluated and saved.
    After each validation the learning rate may decay (`CharTrainer.plateau`).
    `trainer.seconds` counts wall time, evaluation included.
    """
    if max_steps is None and max_seconds is None:
        raise ValueError("give max_steps or max_seconds (or both)")
    cfg = trainer.config
    emit = log or print
    start_step, start_seconds, t_start = trainer.step, trainer.seconds, time.perf_counter()
    recent: list[float] = []

    def elapsed() -> float:
        return time.perf_counter() - t_start

    def done() -> bool:
        return (max_steps is not None and trainer.step >= max_steps) or (
            max_seconds is not None and elapsed() >= max_seconds
        )

    def evaluate() -> None:
        val = trainer.validate()
        decayed = trainer.plateau(val)
        trainer.seconds = start_seconds + elapsed()
        train_bpc = float(np.mean(recent)) if recent else float("nan")
        recent.clear()
        trainer.history.append(
            {
                "step": trainer.step,
                "train_bpc": train_bpc,
                "val_bpc": val,
                "seconds": round(trainer.seconds, 1),
                "chars": trainer.step * cfg.batch_size * cfg.seq_len,
                "lr": trainer.optimizer.lr,
            }
        )
        emit(
            f"step {trainer.step:>6}  train {train_bpc:.3f}  val {val:.3f} bits/char  "
            f"({trainer.seconds / 60:.1f} min, epoch {trainer.epoch:.3f})"
            + (f"  lr -> {trainer.optimizer.lr:.3g}" if decayed else "")
        )
        if checkpoint_path is not None:
            trainer.save(checkpoint_path)

    evaluated = True
    with _Progress(progress, max_steps, max_seconds, start_step) as bar:
        while not done():
            last_bpc = trainer.train_step()
            recent.append(last_bpc)
            evaluated = trainer.step % cfg.eval_every == 0
            if evaluated:
                evaluate()
            if cfg.sample_every and trainer.step % cfg.sample_every == 0:
                text = sample(
                    trainer.model,
                    trainer.corpus.vocab,
                    length=cfg.sample_chars,
                    temperature=0.8,
                    seed=trainer.step,
                )
                emit(f"--- sample at step {trainer.step} (temperature 0.8) ---\n{text}\n---")
            bar.update(trainer.step, elapsed(), last_bpc, trainer.history)
        if not evaluated:
            evaluate()
    return trainer.history


class _Progress:
    """A rich progress bar over steps or seconds (or nothing when disabled)."""

    def __init__(self, enabled, max_steps, max_seconds, start_step) -> None:
        self.enabled = enabled
        self.by_steps = max_steps is not None
        self.total = (max_steps - start_step) if self.by_steps else max_seconds
        self.start_step = start_step
        self._progress = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]charlm[/]"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("train", total=max(self.total, 1e-9), info="")
        return self

    def update(self, step, seconds, bpc, history) -> None:
        if self._progress is None:
            return
        done = (step - self.start_step) if self.by_steps else min(seconds, self.total)
        val = f"  val {history[-1]['val_bpc']:.3f}" if history else ""
        info = f"step {step}  train {bpc:.3f} bits/char{val}"
        self._progress.update(self._task, completed=done, info=info)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def limit_blas_threads(n: int) -> None:
    """Limit the BLAS library NumPy uses to `n` threads for the rest of the process.

    The recurrent products are small (B x H by H x 4H): on a busy machine with few cores,
    BLAS threads mostly wait for each other, and one thread can be several times faster.
    """
    n = check_positive_int("threads", n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
