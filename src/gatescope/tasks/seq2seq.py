"""Sequence-to-sequence tasks, generated (nothing downloaded): reverse, addition, dates.

    from gatescope.tasks.seq2seq import get_seq2seq_task
    task = get_seq2seq_task("dates")
    batch = task.make_batch(64, rng)          # x: source ids (B, S), y: target ids (B, T)
    test = task.make_heldout_batch(500, rng)  # pairs that training never draws
    task.evaluate(model.predict(test.x), test)   # {"exact_match", "token_accuracy"}
    task.encode(["september 27, 1994"]), task.decode(ids)

Ids follow `gatescope.seq2seq`: 0 PAD, 1 BOS, 2 EOS, then the task's symbols. A source row
is its characters padded with PAD; a target row is its characters, EOS, then PAD.

Held-out pairs. Every pair (source string, target) falls in one of 20 buckets by a fixed
integer hash of what defines it (the string; for dates the day and the format): bucket 0
is held out. Training batches never contain a held-out pair; `make_heldout_batch` (used by
`gatescope.train` for its held-out and test sets) draws only held-out pairs.

Metrics: ``exact_match``, the fraction of outputs equal to the whole target, and
``token_accuracy``, the fraction of target tokens (EOS included) predicted at their
position. Each task's ``baseline`` is the exact match of the best guess that ignores the
input (stated per task). Solved at exact match >= 0.995 on the held-out set (stopping
at the first evaluation over 0.99 left fresh test sets at about 0.98).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from gatescope.nn.checks import Seed, as_generator
from gatescope.tasks.base import Batch, Task, check_batch_size, check_int

PAD, BOS, EOS, SPECIALS = 0, 1, 2, 3  # as in gatescope.seq2seq
HELDOUT_BUCKETS = 20  # 1 in 20 pairs is held out


def _bucket(keys: np.ndarray) -> np.ndarray:
    """A fixed integer hash (splitmix64's finaliser) of uint64 keys, mod HELDOUT_BUCKETS."""
    z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(HELDOUT_BUCKETS)).astype(np.int64)


def _string_key(s: str) -> int:
    k = 0
    for ch in s:
        k = (k * 131 + ord(ch)) % (1 << 61)
    return k


class Seq2SeqTask(Task):
    """Base of the generated string-to-string tasks (see the module docstring)."""

    kind: ClassVar[str] = "seq2seq"
    metric_name: ClassVar[str] = "exact_match"
    higher_is_better: ClassVar[bool] = True
    src_symbols: ClassVar[str]
    tgt_symbols: ClassVar[str]

    # -- what subclasses supply: n pairs (source, target) and their hash keys
    def _draw(self, n: int, rng: np.random.Generator) -> tuple[list[str], list[str], np.ndarray]:
        raise NotImplementedError

    @property
    def input_size(self) -> int:
        """V_src, the source vocabulary (specials included)."""
        return SPECIALS + len(self.src_symbols)

    @property
    def output_size(self) -> int:
        """V_tgt, the target vocabulary (specials included)."""
        return SPECIALS + len(self.tgt_symbols)

    @property
    def seq_len(self) -> int:
        return self.max_source_len

    @property
    def max_source_len(self) -> int:
        raise NotImplementedError

    @property
    def max_target_len(self) -> int:
        """Longest target, EOS not counted (the decoding limit)."""
        raise NotImplementedError

    @property
    def threshold(self) -> float:
        # stricter than the 99% aimed at: early stopping picks the first evaluation over it,
        # and a fresh test set then scores a little lower (selection on a noisy estimate)
        return 0.995

    # -- pairs ---------------------------------------------------------------------------------
    def pairs(self, n: int, rng: Seed, heldout: bool = False) -> list[tuple[str, str]]:
        """n (source, target) string pairs from the training or the held-out part."""
        n = check_batch_size(n)
        rng = as_generator(rng)
        out: list[tuple[str, str]] = []
        while len(out) < n:
            srcs, tgts, keys = self._draw(2 * (n - len(out)) + 8, rng)
            held = _bucket(keys) == 0
            out += [(s, t) for s, t, h in zip(srcs, tgts, held, strict=True) if h == heldout]
        return out[:n]

    def make_batch(self, batch_size: int, rng: Seed) -> Batch:
        """A training batch (never a held-out pair): x (B, S), y (B, T) int ids."""
        return self._batch(self.pairs(batch_size, rng, heldout=False))

    def make_heldout_batch(self, batch_size: int, rng: Seed) -> Batch:
        """A batch of held-out pairs only (evaluation)."""
        return self._batch(self.pairs(batch_size, rng, heldout=True))

    def _batch(self, pairs: list[tuple[str, str]]) -> Batch:
        x = self.encode([s for s, _ in pairs])
        y = self.encode([t for _, t in pairs], side="tgt", eos=True)
        return Batch(x, y)

    # -- vocabulary ------------------------------------------------------------------------------
    @cached_property
    def _index(self) -> dict[str, dict[str, int]]:
        return {
            side: {ch: SPECIALS + i for i, ch in enumerate(symbols)}
            for side, symbols in (("src", self.src_symbols), ("tgt", self.tgt_symbols))
        }

    def encode(self, texts: list[str], side: str = "src", eos: bool = False) -> np.ndarray:
        """Strings -> ids (B, L) padded with PAD (EOS after each when eos). Characters
        outside the vocabulary raise ValueError naming them."""
        index = self._index[side]
        texts = [str(t) for t in texts]
        bad = sorted({ch for t in texts for ch in t if ch not in index})
        if bad:
            raise ValueError(
                f"characters not in the {self.name!r} task's {side} vocabulary: "
                f"{''.join(bad)!r} (allowed: {''.join(index)!r})"
            )
        if any(not t for t in texts):
            raise ValueError("texts must not be empty strings")
        width = max(len(t) for t in texts) + (1 if eos else 0)
        ids = np.full((len(texts), width), PAD, np.int64)  # (B, L)
        for b, t in enumerate(texts):
            ids[b, : len(t)] = [index[ch] for ch in t]
            if eos:
                ids[b, len(t)] = EOS
        return ids

    def decode(self, ids: Any, side: str = "tgt") -> str:
        """Ids -> string, stopping at EOS, skipping PAD and BOS."""
        symbols = self.tgt_symbols if side == "tgt" else self.src_symbols
        out = []
        for i in np.asarray(ids).ravel():
            if i == EOS:
                break
            if i >= SPECIALS:
                out.append(symbols[i - SPECIALS])
        return "".join(out)

    # -- scoring -------------------------------------------------------------------------------
    def evaluate(self, outputs: Any, batch: Batch) -> dict[str, float]:
        """outputs: decoded ids (B, T') padded with PAD (as `Seq2Seq.predict` returns), EOS
        optional -> {"exact_match", "token_accuracy"}."""
        if not isinstance(batch, Batch):
            raise ValueError(f"batch must be a Batch, got {type(batch).__name__}")
        out = np.asarray(outputs)
        B = batch.batch_size
        if out.ndim != 2 or out.shape[0] != B or out.dtype.kind not in "iu":
            raise ValueError(
                f"outputs must be decoded int ids of shape ({B}, T'), got {out.shape} {out.dtype}"
            )
        y = batch.y  # (B, T): tokens, EOS, PAD
        T = y.shape[1]
        pred = np.full((B, T), PAD, np.int64)  # each output cut at EOS, then EOS, then PAD
        exact = np.zeros(B, bool)
        for b in range(B):
            row = [int(i) for i in out[b] if i != PAD]
            if EOS in row:
                row = row[: row.index(EOS)]
            want = [int(i) for i in y[b] if i not in (PAD, EOS)]
            exact[b] = row == want
            full = [*row, EOS][:T]
            pred[b, : len(full)] = full
        real = y != PAD
        token = float((pred == y)[real].mean())
        return {"exact_match": float(exact.mean()), "token_accuracy": token}

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict()


@dataclass(frozen=True)
class ReverseTask(Seq2SeqTask):
    """Reverse a string of `min_length`..`length` symbols from the first `symbols` letters.

    Baseline (exact match of the best blind guess: one string of the shortest length):
    P(length = min) * symbols^-min, e.g. 1/16 * 10^-5 at the defaults.
    """

    name: ClassVar[str] = "reverse"
    length: int = 20  # longest string
    min_length: int = 5  # shortest string
    symbols: int = 10  # alphabet size (a, b, c, ...)

    def __post_init__(self) -> None:
        check_int(self, "length", 1)
        check_int(self, "min_length", 1)
        check_int(self, "symbols", 2)
        if self.min_length > self.length:
            raise ValueError(f"min_length must be <= length, got {self.min_length} > {self.length}")
        if self.symbols > 26:
            raise ValueError(f"symbols must be <= 26, got {self.symbols}")

    @property
    def src_symbols(self) -> str:  # type: ignore[override]
        return "abcdefghijklmnopqrstuvwxyz"[: self.symbols]

    tgt_symbols = src_symbols  # type: ignore[assignment]

    @property
    def max_source_len(self) -> int:
        return self.length

    @property
    def max_target_len(self) -> int:
        return self.length

    @property
    def baseline(self) -> float:
        return float(self.symbols) ** -self.min_length / (self.length - self.min_length + 1)

    def _draw(self, n, rng):
        lengths = rng.integers(self.min_length, self.length + 1, n)
        letters = self.src_symbols
        srcs = ["".join(letters[i] for i in rng.integers(0, self.symbols, L)) for L in lengths]
        keys = np.array([_string_key(s) for s in srcs], np.uint64)
        return srcs, [s[::-1] for s in srcs], keys


@dataclass(frozen=True)
class AdditionTask(Seq2SeqTask):
    """'535+61' -> '596': two operands of 1..`digits` digits each (a digit count uniform,
    then uniform digits, as Keras' addition_rnn example draws them).

    Baseline (the most likely sum, guessed blind): computed exactly from the operand
    distribution (about 0.0068 at 3 digits: small sums are over-represented).
    """

    name: ClassVar[str] = "addition"
    length: int = 3  # digits per operand, at most
    src_symbols: ClassVar[str] = "0123456789+"
    tgt_symbols: ClassVar[str] = "0123456789"

    def __post_init__(self) -> None:
        check_int(self, "length", 1)
        if self.length > 9:
            raise ValueError(f"length (digits) must be <= 9, got {self.length}")

    @property
    def max_source_len(self) -> int:
        return 2 * self.length + 1

    @property
    def max_target_len(self) -> int:
        return self.length + 1

    @cached_property
    def _operand_probs(self) -> np.ndarray:
        p = np.zeros(10**self.length)
        for d in range(1, self.length + 1):
            p[: 10**d] += (1.0 / self.length) * 10.0**-d  # uniform d-digit strings (with zeros)
        return p

    @property
    def baseline(self) -> float:
        p = self._operand_probs
        return float(np.convolve(p, p).max())

    def _draw(self, n, rng):
        def operand() -> np.ndarray:
            d = rng.integers(1, self.length + 1, n)
            return (rng.random(n) * 10.0**d).astype(np.int64)

        a, b = operand(), operand()
        srcs = [f"{i}+{j}" for i, j in zip(a, b, strict=True)]
        tgts = [str(i + j) for i, j in zip(a, b, strict=True)]
        return srcs, tgts, (a * 10**self.length + b).astype(np.uint64)


MONTHS = (
    "january february march april may june july august september october november december"
).split()
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
FIRST_DAY = _dt.date(1950, 1, 1)
N_DAYS = (_dt.date(2049, 12, 31) - FIRST_DAY).days + 1


def _month_case(word: str, case: str) -> str:
    return {"lower": word, "title": word.title(), "upper": word.upper()}[case]


def _fmt(d: _dt.date, f: str) -> str:
    month, day, year = MONTHS[d.month - 1], d.day, d.year
    if f.startswith("mdy_"):  # september 27, 1994
        return f"{_month_case(month, f[4:])} {day}, {year}"
    if f == "mon_dy":  # Sep 27, 1994
        return f"{month[:3].title()} {day}, {year}"
    if f == "dmy":  # 27 September 1994
        return f"{day} {month.title()} {year}"
    if f.startswith("wmdy_"):  # Tuesday, September 27, 1994
        case = f[5:]
        wd = WEEKDAYS[d.weekday()]
        return f"{_month_case(wd, case)}, {_month_case(month, case)} {day}, {year}"
    if f == "slash":  # 9/27/94
        return f"{d.month}/{day}/{year % 100:02d}"
    if f == "iso":
        return d.isoformat()
    if f == "dots":  # 27.09.1994
        return f"{day:02d}.{d.month:02d}.{year}"
    raise ValueError(f"unknown date format {f!r}")


DATE_FORMATS = (
    "mdy_lower",
    "mdy_title",
    "mdy_upper",
    "mon_dy",
    "dmy",
    "wmdy_lower",
    "wmdy_title",
    "wmdy_upper",
    "slash",
    "iso",
    "dots",
)


def _date_symbols() -> str:
    chars = set("0123456789 ,/-.")
    for w in MONTHS + WEEKDAYS:
        chars |= set(w) | set(w.upper())
    return "".join(sorted(chars))


@dataclass(frozen=True)
class DatesTask(Seq2SeqTask):
    """Human-written dates -> ISO YYYY-MM-DD, days 1950-01-01..2049-12-31, in the formats of
    `DATE_FORMATS` (month names in lower, Title and UPPER case; the right weekday; m/d/yy
    with years 50-99 -> 19xx and 00-49 -> 20xx; ISO; dd.mm.yyyy), each drawn uniformly.

    A pair is (day, format): held-out pairs are a day written in a format that training never
    shows (the same day appears in training in other formats). Baseline: 1/36525 (guessing
    one day blind).
    """

    name: ClassVar[str] = "dates"
    length: int = 10  # the target's length (YYYY-MM-DD); fixed
    src_symbols: ClassVar[str] = _date_symbols()
    tgt_symbols: ClassVar[str] = "0123456789-"

    def __post_init__(self) -> None:
        if self.length != 10:
            raise ValueError(f"length of the dates task is 10 (YYYY-MM-DD), got {self.length}")

    @property
    def max_source_len(self) -> int:
        return len("wednesday, september 27, 1994")

    @property
    def max_target_len(self) -> int:
        return 10

    @property
    def baseline(self) -> float:
        return 1.0 / N_DAYS

    def _draw(self, n, rng):
        days = rng.integers(0, N_DAYS, n)
        fmts = rng.integers(0, len(DATE_FORMATS), n)
        dates = [FIRST_DAY + _dt.timedelta(days=int(k)) for k in days]
        srcs = [_fmt(d, DATE_FORMATS[f]) for d, f in zip(dates, fmts, strict=True)]
        tgts = [d.isoformat() for d in dates]
        return srcs, tgts, (days * len(DATE_FORMATS) + fmts).astype(np.uint64)


SEQ2SEQ_TASKS: Mapping[str, type[Seq2SeqTask]] = {
    cls.name: cls for cls in (ReverseTask, AdditionTask, DatesTask)
}


def get_seq2seq_task(name: str, **options: Any) -> Seq2SeqTask:
    """Build the sequence-to-sequence task `name` with its options (ValueError if unknown)."""
    if name not in SEQ2SEQ_TASKS:
        raise ValueError(
            f"unknown seq2seq task {name!r}; expected one of: {', '.join(SEQ2SEQ_TASKS)}"
        )
    return SEQ2SEQ_TASKS[name](**options)
