r"""Real text as a task: the corpus, the vocabulary and the streams truncated BPTT reads.

    from gatescope.tasks.text import CorpusSpec, TextTask, load_corpus
    corpus = load_corpus(CorpusSpec(paths=("my_texts/",)))   # default: the stdlib's *.py
    task = TextTask(corpus, seq_len=64, eval_chars=50_000)
    batch = task.batch_at(step, batch_size=32)                # x, y (B, T) int ids
    task.pass_starts(step, 32)                                # True: reset the carried state

The pieces, in the order data flows through them:

- `load_corpus`: text files (or folders) -> a training and a validation text, split *by
  file* with a seeded shuffle; by default Python's own standard-library source.
- `Vocab`: characters of the training text (most frequent first up to a cap, then sorted by
  code point); index 0 is the one symbol for every unknown character.
- `StreamBatcher`: B parallel streams through the training text, each cut into chunks of T
  steps. Chunk k of stream b is `ids[b*S + k*T : b*S + (k+1)*T]` (S = len // B); batch k
  stacks chunk k of every stream, so row b of batch k+1 continues row b of batch k.
- `TextTask`: what `gatescope.train.fit` consumes: batch `step % num_batches` at each step
  (sequential, not drawn), a pass over the text every `num_batches` steps (where the
  carried state is reset), and the metric "bits_per_char" (lower is better) measured on
  `validation_windows` of the validation text.

Shapes: B batch (streams), T time (chunk length), V vocabulary, N chars.
Bits per character = mean negative log2-likelihood of each next character = nats / ln 2.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gatescope.nn.checks import Seed, as_generator, check_positive_int
from gatescope.tasks.base import Batch, Task, classification_metrics

__all__ = [
    "UNK",
    "Corpus",
    "CorpusSpec",
    "StreamBatcher",
    "TextTask",
    "Vocab",
    "corpus_from_meta",
    "default_corpus_root",
    "find_text_files",
    "load_corpus",
    "read_text_file",
    "spec_from_meta",
    "validation_windows",
    "vocab_from_meta",
]

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


# ============================================================================ the task


class TextTask(Task):
    """Next-character prediction on a corpus, read as B parallel streams (truncated BPTT).

    Not drawn at random: the batch of step s is `StreamBatcher.batch(s % num_batches)`, so
    that consecutive steps continue each other's text; `pass_starts(s)` says where a new
    pass over the text begins (the training loop resets a carried state there). The metric
    is bits per character on `validation_windows(corpus.val_ids, eval_chars)` (lower is
    better), measured by `gatescope.charlm.bits_per_char` with the state carried.
    """

    name: ClassVar[str] = "text"
    kind: ClassVar[str] = "classify_steps"
    metric_name: ClassVar[str] = "bits_per_char"
    higher_is_better: ClassVar[bool] = False
    encoding: ClassVar[str] = "one_hot"  # the input SequenceModel.for_task builds by default
    sequential: ClassVar[bool] = True  # batches by step, not drawn

    def __init__(self, corpus: Corpus, seq_len: int = 64, eval_chars: int = 50_000) -> None:
        if not isinstance(corpus, Corpus):
            raise ValueError(f"corpus must be a Corpus (load_corpus), got {type(corpus).__name__}")
        self.corpus = corpus
        self.length = check_positive_int("seq_len", seq_len)
        self.eval_chars = check_positive_int("eval_chars", eval_chars)
        self._batchers: dict[int, StreamBatcher] = {}

    @property
    def vocab(self) -> Vocab:
        return self.corpus.vocab

    @property
    def input_size(self) -> int:
        return self.corpus.vocab.size

    @property
    def output_size(self) -> int:
        return self.corpus.vocab.size

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def baseline(self) -> float:
        """log2 V: bits per char of a uniform guess over the vocabulary."""
        return math.log2(self.corpus.vocab.size)

    @property
    def threshold(self) -> float:
        """0: a text is never "solved" (no model reaches 0 bits per char)."""
        return 0.0

    # ----- the training stream -----------------------------------------------------------
    def batcher(self, batch_size: int) -> StreamBatcher:
        """The StreamBatcher of `batch_size` streams over the training text (cached)."""
        B = check_positive_int("batch_size", batch_size)
        if B not in self._batchers:
            self._batchers[B] = StreamBatcher(self.corpus.train_ids, B, self.length)
        return self._batchers[B]

    def steps_per_pass(self, batch_size: int) -> int:
        return self.batcher(batch_size).num_batches

    def pass_starts(self, step: int, batch_size: int) -> bool:
        """True when step `step` (0-based) reads the start of the text: reset the state."""
        return step % self.steps_per_pass(batch_size) == 0

    def batch_at(self, step: int, batch_size: int) -> Batch:
        """The batch of step `step`: x and y (B, T) int64 ids, y the next characters."""
        b = self.batcher(batch_size)
        x, y = b.batch(step % b.num_batches)
        return Batch(x=np.ascontiguousarray(x), y=np.ascontiguousarray(y))

    def validation_ids(self) -> np.ndarray:
        """(B, L + 1): the windows of the validation text measured at each evaluation."""
        return validation_windows(self.corpus.val_ids, self.eval_chars)

    # ----- the Task interface ------------------------------------------------------------
    def make_batch(self, batch_size: int, rng: Seed) -> Batch:
        """`batch_size` windows of T + 1 characters at random places of the validation text
        (probes for the instruments; training reads `batch_at`)."""
        B = check_positive_int("batch_size", batch_size)
        ids = self.corpus.val_ids
        T = min(self.length, ids.size - 1)
        starts = as_generator(rng).integers(0, ids.size - T, B)
        win = ids[starts[:, None] + np.arange(T + 1)]  # (B, T + 1)
        return Batch(x=np.ascontiguousarray(win[:, :-1]), y=np.ascontiguousarray(win[:, 1:]))

    def _evaluate(self, out: np.ndarray, batch: Batch) -> dict[str, float]:
        _, nll = classification_metrics(out, batch.y)  # (B, T) nats
        if batch.mask is not None:
            nll = nll[batch.mask]
        ce = float(np.mean(nll))
        return {"bits_per_char": ce / LN2, "cross_entropy": ce}

    def to_dict(self) -> dict[str, Any]:
        """{"name": "text", "length", "eval_chars"}; the corpus and the vocabulary go in the
        checkpoint's "corpus" and "vocab" (`checkpoint_meta`)."""
        return {"name": self.name, "length": self.length, "eval_chars": self.eval_chars}

    def checkpoint_meta(self) -> dict[str, Any]:
        """The metadata a char-LM checkpoint holds beside "task": "vocab" and "corpus"."""
        c = self.corpus
        return {
            "vocab": {"chars": c.vocab.chars, "unknown": UNK},
            "corpus": {**c.spec.to_dict(), **c.summary()},
        }

    def __repr__(self) -> str:
        return f"TextTask(seq_len={self.length}, vocab={self.vocab.size}, eval_chars={self.eval_chars})"


# ============================================================================ from checkpoints


def vocab_from_meta(meta: Mapping[str, Any]) -> Vocab:
    """The vocabulary a char-LM checkpoint's metadata holds (ValueError if it holds none)."""
    try:
        return Vocab(meta["vocab"]["chars"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"the metadata holds no vocabulary ({e!r})") from None


def spec_from_meta(meta: Mapping[str, Any]) -> CorpusSpec:
    """The CorpusSpec a char-LM checkpoint's metadata holds."""
    try:
        c = meta["corpus"]
        kw = {k: c[k] for k in CorpusSpec.__dataclass_fields__}
        return CorpusSpec(**{**kw, "paths": tuple(kw["paths"])})
    except (KeyError, TypeError) as e:
        raise ValueError(f"the metadata holds no corpus description ({e!r})") from None


def corpus_from_meta(
    meta: Mapping[str, Any], paths: Sequence[str | os.PathLike[str]] | None = None
) -> Corpus:
    """Re-read the corpus a char-LM checkpoint was trained on, with its vocabulary.

    `paths`: where the corpus is now, if it moved (its glob, split and vocabulary options
    stay the checkpoint's). ValueError if it cannot be read, or if its text is not the one
    the checkpoint recorded (the fingerprint of both texts differs).
    """
    spec = spec_from_meta(meta)
    if paths is not None:
        spec = CorpusSpec(
            **{**spec.to_dict(), "paths": tuple(str(Path(p).resolve()) for p in paths)}
        )
    corpus = load_corpus(spec, vocab=vocab_from_meta(meta))
    want = meta["corpus"].get("fingerprint")
    if corpus.fingerprint != want:
        raise ValueError(
            "the corpus has changed since this checkpoint was written (files added, removed "
            f"or edited: fingerprint {corpus.fingerprint} != {want}); it cannot be resumed on "
            "this text"
        )
    return corpus
