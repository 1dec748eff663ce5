"""gatescope.tasks.seq2seq: what the generators write, the held-out split, the metrics."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from gatescope.tasks import task_from_dict
from gatescope.tasks.base import Batch
from gatescope.tasks.seq2seq import (
    DATE_FORMATS,
    EOS,
    PAD,
    AdditionTask,
    DatesTask,
    ReverseTask,
    get_seq2seq_task,
)

TASKS = [ReverseTask(), AdditionTask(), DatesTask()]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_heldout_pairs_never_appear_in_training(task):
    train = set(task.pairs(4000, np.random.default_rng(0)))
    held = set(task.pairs(400, np.random.default_rng(1), heldout=True))
    assert len(held) > 100 and not train & held
    # and the split is a property of the pair, not of the stream
    again = set(task.pairs(4000, np.random.default_rng(2)))
    assert not again & held


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_batches_are_ids_with_eos_and_padding(task):
    b = task.make_batch(50, np.random.default_rng(3))
    assert isinstance(b, Batch) and b.x.dtype == np.int64 and b.y.dtype == np.int64
    assert b.x.max() < task.input_size and b.y.max() < task.output_size
    for x, y in zip(b.x, b.y, strict=True):
        n = int((y != PAD).sum())
        assert y[n - 1] == EOS and EOS not in y[: n - 1] and np.all(y[n:] == PAD)
        m = int((x != PAD).sum())
        assert np.all(x[m:] == PAD) and np.all(x[:m] >= 3)
    pairs = [(task.decode(x, "src"), task.decode(y)) for x, y in zip(b.x, b.y, strict=True)]
    assert pairs == [(s, t) for s, t in task.pairs(50, np.random.default_rng(3))]


def test_reverse_writes_reversed_strings_of_5_to_20():
    pairs = ReverseTask().pairs(2000, np.random.default_rng(0))
    assert all(t == s[::-1] for s, t in pairs)
    lengths = {len(s) for s, _ in pairs}
    assert lengths == set(range(5, 21))


def test_addition_writes_sums_of_operands_up_to_3_digits():
    pairs = AdditionTask().pairs(3000, np.random.default_rng(0))
    for s, t in pairs:
        a, b = s.split("+")
        assert int(a) + int(b) == int(t) and 1 <= len(a) <= 3 and 1 <= len(b) <= 3
        assert str(int(a)) == a
    assert max(int(s.split("+")[0]) for s, _ in pairs) > 900


def _parse(s: str) -> dt.date:
    """An independent reading of each family (strptime; m/d/yy by the task's century rule)."""
    if "/" in s:
        m, d, y = (int(p) for p in s.split("/"))
        return dt.date(1900 + y if y >= 50 else 2000 + y, m, d)
    for fmt in ("%Y-%m-%d", "%d.%m.%Y", "%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%A, %B %d, %Y"):
        try:
            d = dt.datetime.strptime(s, fmt).date()
        except ValueError:
            continue
        if fmt.startswith("%A"):
            assert s.split(",")[0].lower() == d.strftime("%A").lower(), f"wrong weekday: {s}"
        return d
    raise AssertionError(f"unparsable date {s!r}")


def test_dates_are_right_in_every_family():
    pairs = DatesTask().pairs(3000, np.random.default_rng(0))
    for s, t in pairs:
        assert _parse(s).isoformat() == t
    srcs = [s for s, _ in pairs]
    assert any(s.islower() and s[0].isalpha() for s in srcs)  # september 27, 1994
    assert any(s.isupper() for s in srcs)  # SEPTEMBER 27, 1994 / TUESDAY, ...
    assert any("/" in s for s in srcs) and any("." in s for s in srcs)
    assert any(s.count(",") == 2 for s in srcs)  # weekday families
    years = {int(t[:4]) for _, t in pairs}
    assert min(years) == 1950 and max(years) == 2049
    assert len(DATE_FORMATS) == 11


def test_dates_heldout_is_a_day_in_an_unseen_format():
    """Held-out pairs are (day, format) pairs; their days do appear in training otherwise."""
    task = DatesTask()
    held = task.pairs(300, np.random.default_rng(5), heldout=True)
    from gatescope.tasks.seq2seq import _fmt

    d = dt.date.fromisoformat(held[0][1])
    written = {_fmt(d, f) for f in DATE_FORMATS}
    assert held[0][0] in written and len(written) > 1


def test_metrics_exact_match_and_token_accuracy():
    task = ReverseTask()
    b = task._batch([("abcde", "edcba"), ("abcdef", "fedcba")])
    perfect = np.where(b.y == EOS, PAD, b.y)
    assert task.evaluate(perfect, b) == {"exact_match": 1.0, "token_accuracy": 1.0}
    wrong = perfect.copy()
    wrong[1, 0] = wrong[1, 1]  # one token of 13 (6 + EOS, 5 + EOS) wrong
    m = task.evaluate(wrong, b)
    assert m["exact_match"] == 0.5 and m["token_accuracy"] == pytest.approx(12 / 13)
    short = perfect.copy()
    short[0, 4] = PAD  # the output stops early: its EOS lands on the last letter's place
    m = task.evaluate(short, b)
    assert m["exact_match"] == 0.5 and m["token_accuracy"] == pytest.approx(11 / 13)


def test_baselines():
    assert DatesTask().baseline == pytest.approx(1 / 36525)
    assert ReverseTask().baseline == pytest.approx(10.0**-5 / 16)
    # the most likely sum, by enumeration of how operands are drawn
    p = np.zeros(1000)
    for d in (1, 2, 3):
        p[: 10**d] += 10.0**-d / 3
    assert AdditionTask().baseline == pytest.approx(np.convolve(p, p).max())
    assert all(t.threshold == 0.995 and t.metric_name == "exact_match" for t in TASKS)


def test_encode_names_unknown_characters_and_round_trips():
    task = DatesTask()
    with pytest.raises(ValueError, match="'#~'"):
        task.encode(["12~3#"])
    ids = task.encode(["Sep 1, 2000", "1/2/03"])
    assert [task.decode(r, "src") for r in ids] == ["Sep 1, 2000", "1/2/03"]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_task_from_dict(task):
    assert task_from_dict(task.to_dict()) == task
    assert get_seq2seq_task(task.name) == task
    with pytest.raises(ValueError, match="unknown seq2seq task"):
        get_seq2seq_task("nope")
