"""gatescope.inspect.seq2seq (attention on real examples), viz.seq2seq's grid, and
`gatescope seq2seq plot attention` with several texts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from gatescope.cli import main
from gatescope.inspect import seq2seq as gis
from gatescope.seq2seq import EOS, Seq2Seq
from gatescope.tasks.seq2seq import (
    DATE_FORMATS,
    FIRST_DAY,
    MONTHS,
    N_DAYS,
    _fmt,
    get_seq2seq_task,
)
from gatescope.viz.seq2seq import attention_figure, attention_grid_figure


def _model(task, attention: str = "bahdanau", seed: int = 0) -> Seq2Seq:
    model = Seq2Seq(task.input_size, task.output_size, 8, attention=attention, seed=seed)
    model.params["out.weight"] *= 4.0  # far from uniform: decodes of several lengths
    return model


# ------------------------------------------------------------------------------ fields


def test_date_fields_find_year_month_day_and_weekday_in_every_format():
    """On 300 random days in every format of the task: the characters at each field spell
    that field of the date (two-digit years and month names included)."""
    rng = np.random.default_rng(0)
    families = set()
    for k in rng.integers(0, N_DAYS, 300):
        d = FIRST_DAY + dt.timedelta(days=int(k))
        for f in DATE_FORMATS:
            text = _fmt(d, f)
            fields = gis.date_fields(text)
            spell = {name: "".join(text[j] for j in pos) for name, pos in fields.items()}
            year = str(d.year) if f != "slash" else f"{d.year % 100:02d}"
            assert spell["year"] == year, text
            assert int(spell["day"]) == d.day, text
            month = spell["month"].lower()
            assert (month.isdigit() and int(month) == d.month) or MONTHS[d.month - 1].startswith(
                month
            ), text
            assert ("weekday" in fields) == f.startswith("wmdy"), text
            if "weekday" in fields:
                assert spell["weekday"].lower() == d.strftime("%A").lower()
            assert gis._iso_of(text) == d.isoformat(), text
            families.add(gis._parse_date(text)[0])
    assert families == set(gis.DATE_FAMILIES)


@pytest.mark.parametrize("text", ["yesterday", "27/09", "1994 09 27", "Sep 27, 94", ""])
def test_date_fields_refuse_what_is_not_a_task_date(text):
    with pytest.raises(ValueError, match="not a date"):
        gis.date_fields(text)


def test_field_attention_and_reverse_alignment_on_known_weights():
    text = "Sep 27, 1994"
    src = gis.date_fields(text)
    S = len(text)
    exact = np.zeros((11, S))
    for name, steps in gis.ISO_FIELDS.items():
        for t in steps:
            exact[t, src[name][0]] = 0.25
            exact[t, src[name][-1]] += 0.75
    exact[[4, 7, 10], 0] = 1.0  # separators and EOS: anywhere
    assert gis.field_attention(exact, gis.ISO_FIELDS, src) == {
        "year": 1.0,
        "month": 1.0,
        "day": 1.0,
    }
    uniform = np.full((11, S), 1.0 / S)
    np.testing.assert_allclose(
        list(gis.field_attention(uniform, gis.ISO_FIELDS, src).values()), [4 / S, 3 / S, 2 / S]
    )
    # a decode cut short: the missing steps are left out, a field with none is NaN
    short = gis.field_attention(exact[:6], gis.ISO_FIELDS, src)
    assert short["year"] == 1.0 and short["month"] == 1.0 and np.isnan(short["day"])
    n = 6
    anti = np.eye(n)[::-1]
    assert gis.reverse_alignment(np.vstack([anti, np.full((1, n), 1 / n)]), n) == (1.0, 1.0)
    right = np.vstack([np.eye(n)[-1:], np.eye(n)[:0:-1]])  # row t on n - t (row 0 on n - 1)
    assert gis.reverse_alignment(right, n, offset=1) == (1.0, 1.0)
    assert gis.reverse_alignment(right, n) == (1 / n, 1 / n)  # only row 0 on the diagonal
    assert gis.reverse_alignment(np.full((n + 1, n), 1 / n), n)[0] == pytest.approx(1 / n)
    with pytest.raises(ValueError, match="alpha"):
        gis.reverse_alignment(np.ones((3, 2)), 4)


# ------------------------------------------------------------------------------ decodes


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_decode_attention_is_the_weights_the_decode_used(attention):
    """Each text's weights are its greedy decode's, cut to its characters: the same as
    teacher forcing the model on its own output, alone; rows sum to 1."""
    task = get_seq2seq_task("dates")
    model = _model(task, attention)
    texts = ["Tuesday, September 27, 1994", "9/27/94", "1994-09-27"]
    decoded = gis.decode_attention(model, task, texts)
    for text, d in zip(texts, decoded, strict=True):
        assert d.source == text and d.alpha.shape[1] == len(text)
        np.testing.assert_allclose(d.alpha.sum(axis=1), 1.0, rtol=1e-6)
        ids = task.encode([text])
        out = task.encode([d.output], side="tgt") if d.output else np.zeros((1, 0), int)
        tgt = np.concatenate([out, [[EOS]]], axis=1)[:, : d.alpha.shape[0]]
        model.forward(ids, tgt)
        np.testing.assert_allclose(model.attention[0], d.alpha, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="no attention"):
        gis.decode_attention(_model(task, "none"), task, texts)
    with pytest.raises(ValueError, match="vocabulary"):
        gis.decode_attention(model, task, ["Sep 27, 1994!"])


def test_attention_alignment_summarises_the_per_text_numbers():
    task = get_seq2seq_task("dates")
    model = _model(task)
    texts = ["Tuesday, September 27, 1994", "Sep 27, 1994", "27.09.1994", "monday, may 1, 2000"]
    res = gis.attention_alignment(model, task, texts)
    decoded = gis.decode_attention(model, task, texts)
    assert res["n"] == 4 and [r["input"] for r in res["per_text"]] == texts
    for r, d in zip(res["per_text"], decoded, strict=True):
        assert r["fields"] == gis.field_attention(
            d.alpha, gis.ISO_FIELDS, gis.date_fields(d.source)
        )
        assert all(0 <= v <= 1 for v in r["fields"].values() if not np.isnan(v))
    wd = [r["weekday"] for r in res["per_text"] if r["weekday"] is not None]
    assert len(wd) == 2 and res["weekday"] == pytest.approx(np.mean(wd))
    assert set(res["families"]) == {"wmdy", "mon_dy", "dots"}
    assert res["families"]["wmdy"]["n"] == 2
    assert res["exact"] == np.mean([d.output == gis._iso_of(d.source) for d in decoded])

    rev = get_seq2seq_task("reverse")
    rmodel = _model(rev, "luong")
    texts = ["abcdef", "jihgfedcba", "aaaaa"]
    res = gis.attention_alignment(rmodel, rev, texts)
    want = [
        gis.reverse_alignment(d.alpha, len(d.source))
        for d in gis.decode_attention(rmodel, rev, texts)
    ]
    assert res["anti_diagonal"] == pytest.approx(np.mean([w[0] for w in want]))
    assert res["argmax_anti_diagonal"] == pytest.approx(np.mean([w[1] for w in want]))
    right = [
        gis.reverse_alignment(d.alpha, len(d.source), 1)
        for d in gis.decode_attention(rmodel, rev, texts)
    ]
    assert res["anti_diagonal_right"] == pytest.approx(np.mean([w[0] for w in right]))
    with pytest.raises(ValueError, match="task must be"):
        add = get_seq2seq_task("addition")
        gis.attention_alignment(_model(add), add, ["1+2"])


# ------------------------------------------------------------------------------ figures


def test_attention_grid_figure_draws_one_panel_per_decode():
    a = np.full((3, 4), 0.25)
    b = np.eye(2)
    fig = attention_grid_figure(
        [a, b, a], ["abcd", "xy", "abcd"], ["123", "12", "123"], titles=list("pqr"), ncols=2
    )
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 3 and len(fig.axes) == 5  # 2 x 2 cells and one colour bar
    np.testing.assert_array_equal(heat[1].images[0].get_array(), b)
    assert [ax.get_title(loc="left") for ax in heat[:3]] == ["p", "q", "r"]
    assert not fig.axes[3].axison  # the unused fourth cell
    with pytest.raises(ValueError, match="alpha must be"):
        attention_grid_figure([a], ["abc"], ["123"])
    with pytest.raises(ValueError, match="one length"):
        attention_grid_figure([a, a], ["abcd"], ["123", "123"])
    with pytest.raises(ValueError, match="ncols"):
        attention_grid_figure([a], ["abcd"], ["123"], ncols=0)
    one = attention_figure(a, "abcd", "123")
    np.testing.assert_array_equal(one.axes[0].images[0].get_array(), a)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("s2sinspect") / "dates.safetensors"
    argv = ["seq2seq", "train", "--task", "dates", "--hidden", "6", "--batch", "8"]
    argv += ["--eval-every", "5", "--eval-size", "16", "--steps", "3", "--quiet"]
    assert main([*argv, "--out", str(path)]) == 0
    return str(path)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_plot_attention_of_several_texts_draws_a_grid(checkpoint, tmp_path, capsys):
    grid, one = tmp_path / "grid.png", tmp_path / "one.png"
    texts = ["Sep 27, 1994", "9/27/94", "27.09.1994", "1994-09-27"]
    code, out, _ = _run(
        capsys,
        "seq2seq",
        "plot",
        "attention",
        checkpoint,
        *texts,
        "--out",
        str(grid),
        "--cols",
        "2",
    )
    assert code == 0 and out.strip() == str(grid)
    code, _, _ = _run(
        capsys, "seq2seq", "plot", "attention", checkpoint, texts[0], "--out", str(one)
    )
    assert code == 0
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert grid.stat().st_size > one.stat().st_size  # four panels, not one
    code, _, err = _run(
        capsys, "seq2seq", "plot", "gates", checkpoint, *texts[:2], "--out", str(one)
    )
    assert code == 2 and "plot gates takes one TEXT" in err and "Traceback" not in err
    code, _, err = _run(
        capsys, "seq2seq", "plot", "attention", checkpoint, "Sep 27!", "--out", str(one)
    )
    assert code == 2 and "'!'" in err and len(err.strip().splitlines()) == 1
