"""Interpretable units: text features, correlations, saturation (gatescope.inspect.units), their
pictures (gatescope.viz.units) and `gatescope cells`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gatescope import charlm as cl
from gatescope.inspect.units import (
    FEATURE_NAMES,
    excerpt,
    gate_saturation,
    pearson_columns,
    pearson_matrix,
    search_cells,
    text_features,
)
from gatescope.train import TrainConfig, fit
from gatescope.viz.units import render_html, render_png, render_saturation_png, units_page


def marked(text: str, name: str) -> str:
    """The characters of `text` where feature `name` is non-zero."""
    f = text_features(text)[name]
    return "".join(c for c, v in zip(text, f) if v)


def column(text: str, name: str) -> list[int]:
    return text_features(text)[name].astype(int).tolist()


# ------------------------------------------------------------------------------ features


def test_feature_names_and_shapes():
    f = text_features("x = 1\n")
    assert tuple(f) == FEATURE_NAMES
    assert all(v.shape == (6,) and v.dtype == np.float64 for v in f.values())
    assert all(v.size == 0 for v in text_features("").values())


def test_strings_include_the_opening_quote_and_end_at_the_closing_one():
    assert column('a = "xy" + b', "in_string") == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert marked("s = 'it' + 'is'", "in_string") == "'it'is"
    assert marked('f(r"a\\d", b"x")', "in_string") == '"a\\d"x'  # prefixes stay outside


def test_escaped_quotes_do_not_close_a_string():
    text = 's = "say \\"hi\\"" # c'
    assert marked(text, "in_string") == '"say \\"hi\\"'
    assert marked(text, "in_comment") == "# c"
    assert marked("x = 'don\\'t' + y", "in_string") == "'don\\'t"
    assert marked('x = "a\\\\" + "b"', "in_string") == '"a\\\\"b'  # an escaped backslash


def test_comments_containing_quotes_and_strings_containing_hashes():
    text = "x = 1  # it's a 'comment' with \"quotes\"\ny = '# not a comment'\n"
    assert marked(text, "in_comment") == "# it's a 'comment' with \"quotes\""
    assert marked(text, "in_string") == "'# not a comment"
    f = text_features(text)
    assert f["in_comment"][text.index("\n")] == 0  # the newline ends the comment


def test_triple_quoted_strings_span_lines_and_contain_quotes():
    text = 'x = """one "quoted" \'thing\'\ntwo # no comment\n"""\ny = 2\n'
    inside = marked(text, "in_string")
    assert inside == '"""one "quoted" \'thing\'\ntwo # no comment\n'
    assert marked(text, "in_comment") == ""
    assert marked(text, "in_docstring") == ""  # assigned: not a docstring


def test_docstrings_of_modules_functions_and_classes():
    text = (
        '"""Module doc."""\n'
        "import os\n"
        "def f(a,\n"
        "      b) -> int:  # note\n"
        "    '''Function doc.'''\n"
        '    s = """not a doc"""\n'
        "    return a\n"
        "class C:\n"
        '    r"""Class doc."""\n'
        '    """not a doc either"""\n'
    )
    assert marked(text, "in_docstring") == '"""Module doc.\'\'\'Function doc."""Class doc.'
    assert set(marked(text, "in_docstring")) <= set(marked(text, "in_string"))


def test_nested_brackets_ignore_strings_and_comments():
    text = "f(a[1], {'(': [2]})  # )\n"
    depth = column(text, "bracket_depth")
    code = [0, 1, 1, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 2, 1, 0, 0, 0]
    assert depth[: text.index("#")] == code
    assert depth[text.index("#") :] == [0, 0, 0, 0]
    assert max(column(")))(", "bracket_depth")) == 1  # never below zero


def test_unterminated_strings_end_with_the_line():
    text = "don't stop\nx = (1)\n"
    assert marked(text, "in_string") == "'t stop"
    assert column(text, "bracket_depth")[text.index("(")] == 1  # back in code on line 2
    assert marked('x = """never closed\nstill (inside)', "in_string").endswith("still (inside)")


def test_indent_and_line_position():
    text = "if x:\n    y = 1\n\tz\n"
    assert column(text, "line_position") == [1, 2, 3, 4, 5, 0] + list(range(1, 10)) + [0, 1, 2, 0]
    assert column(text, "indent") == [0] * 6 + [1, 2, 3, 4] + [4] * 5 + [0, 8, 8, 0]


def test_arbitrary_text_does_not_break_the_scanner():
    rng = np.random.default_rng(0)
    alphabet = list("'\"#\\()[]{}\n \t abc:\x00é\r")
    for _ in range(20):
        text = "".join(alphabet[k] for k in rng.integers(0, len(alphabet), 300))
        f = text_features(text)
        assert all(v.shape == (300,) and np.isfinite(v).all() for v in f.values())
        assert (f["bracket_depth"] >= 0).all() and (f["in_docstring"] <= f["in_string"]).all()
        assert not (f["in_string"].astype(bool) & f["in_comment"].astype(bool)).any()


# ------------------------------------------------------------------------------ correlation


def test_pearson_matches_numpy_and_handles_constants():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 5))
    a[:, 3] = 2.0  # a dead unit
    x = a[:, 0] * 0.5 + rng.normal(size=200)
    r = pearson_columns(a, x)
    for u in (0, 1, 2, 4):
        assert r[u] == pytest.approx(np.corrcoef(a[:, u], x)[0, 1], abs=1e-12)
    assert r[3] == 0.0
    assert np.isnan(pearson_columns(a, np.ones(200))).all()


def test_pearson_matrix_is_one_column_per_feature():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(150, 4))  # (N, U)
    f = np.stack([a[:, 1] + rng.normal(size=150), np.ones(150), -a[:, 2]], axis=1)  # (N, F)
    r = pearson_matrix(a, f)
    assert r.shape == (4, 3)
    for j in range(3):
        np.testing.assert_array_equal(r[:, j], pearson_columns(a, f[:, j]))
    assert r[2, 2] == pytest.approx(-1.0) and np.isnan(r[:, 1]).all()
    assert pearson_matrix(a, np.zeros((150, 0))).shape == (4, 0)
    with pytest.raises(ValueError, match="features"):
        pearson_matrix(a, f[:10])


def test_search_finds_a_planted_unit_best_first():
    rng = np.random.default_rng(2)
    text = 'x = "abc"  # c\ny = [1, (2)]\n' * 20
    feats = text_features(text)
    N = len(text)
    acts = {(l, s): rng.normal(size=(N, 6)) for l in range(2) for s in ("c", "h")}
    acts[(1, "c")][:, 4] = -feats["in_string"] + 0.1 * rng.normal(size=N)
    acts[(0, "h")][:, 2] = feats["bracket_depth"] + 0.3 * rng.normal(size=N)
    found = search_cells(acts, feats)
    assert set(found) == set(FEATURE_NAMES)
    best = found["in_string"][0]
    assert (best["layer"], best["state"], best["unit"]) == (1, "c", 4) and best["corr"] < -0.95
    assert found["bracket_depth"][0]["unit"] == 2 and found["bracket_depth"][0]["layer"] == 0
    corrs = [abs(row["corr"]) for row in found["in_comment"]]
    assert corrs == sorted(corrs, reverse=True) and len(corrs) == 2 * 2 * 6
    assert found["in_docstring"] == []  # constant over this text: no correlation exists
    assert len(search_cells(acts, feats, top=3)["line_position"]) == 3


def test_gate_saturation_fractions():
    g = np.array([[0.05, 0.5], [0.95, 0.5], [0.02, 0.99], [0.5, 0.97]])  # (N=4, H=2)
    (row,) = gate_saturation({(0, "f"): g})
    assert row["layer"] == 0 and row["gate"] == "f" and row["units"] == 2
    assert row["below"] == pytest.approx(2 / 8) and row["above"] == pytest.approx(3 / 8)
    assert row["per_unit_below"] == [0.5, 0.0] and row["per_unit_above"] == [0.25, 0.5]
    assert row["units_mostly_below"] == 0 and row["units_mostly_above"] == 0


# ------------------------------------------------------------------------------ pictures


def test_render_html_escapes_and_colours_every_char():
    text = "<a>&\n"
    out = render_html(text, np.array([1.0, -1.0, 0.0, 0.5, 0.0]), "t<")
    assert "&lt;" in out and "&amp;" in out and "t&lt;" in out
    assert out.count("<span") == 5
    with pytest.raises(ValueError, match="one value per character"):
        render_html(text, np.zeros(3))


def test_excerpt_finds_the_varying_window():
    text = "".join(f"l{k}\n" for k in range(100))
    v = np.zeros(len(text))
    start = text.index("l70")
    v[start : start + 3] = 1
    a, b = excerpt(text, v, lines=10)
    assert a <= start < b and text[a:b].count("\n") == 10


def test_render_png_writes_an_image(tmp_path):
    text = "def f(x):\n\treturn 'a' + x\n"
    path = tmp_path / "c.png"
    render_png(str(path), text, np.linspace(-1, 1, len(text)), "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_units_page_is_the_shared_shell_around_the_sections():
    section = render_html("ab", np.array([1.0, -1.0]), "s")
    page = units_page([section, section], "cells & <units>")
    assert page.startswith("<!doctype html>\n") and page.endswith("</body>\n</html>\n")
    assert "<title>cells &amp; &lt;units&gt;</title>" in page
    assert "<h1>cells &amp; &lt;units&gt;</h1>" in page and page.count(section) == 2
    assert '<link rel="icon" href="data:,">' in page  # no request for /favicon.ico


def test_render_saturation_png_needs_gates(tmp_path):
    g = np.random.default_rng(0).uniform(size=(50, 3))  # (N, H)
    path = tmp_path / "s.png"
    render_saturation_png(str(path), gate_saturation({(0, "f"): g, (1, "i"): g}))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no gates"):
        render_saturation_png(str(path), [])


# ------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    code = 'def f(a, b):\n    """Doc."""\n    return [a, (b, "s")]  # c\n'
    for k in range(4):
        (folder / f"m{k}.py").write_text(code * 10)
    corpus = cl.load_corpus(cl.CorpusSpec(paths=(str(folder),), val_fraction=0.25))
    model = cl.new_model(corpus.vocab.size, hidden_size=6, num_layers=2, seed=0)
    task = cl.TextTask(corpus, seq_len=8, eval_chars=50)
    cfg = TrainConfig(steps=3, batch_size=2, eval_every=5, carry_state=True, early_stop=False)
    path = folder / "m.safetensors"
    fit(task, model, cfg, checkpoint_path=path, progress=False)
    return path, folder / "m0.py"


def test_cells_json_lists_best_units_per_feature(checkpoint, run_cli):
    ckpt, text = checkpoint
    code, out, err = run_cli("cells", ckpt, "--text", text, "--json", "--top", 5)
    assert code == 0, err
    report = json.loads(out)
    assert list(report["features"]) == list(FEATURE_NAMES)
    for rows in report["features"].values():
        assert len(rows) == 5
        assert all(set(r) == {"layer", "unit", "state", "corr"} for r in rows)
        assert all(r["state"] in ("c", "h") and 0 <= r["layer"] < 2 and 0 <= r["unit"] < 6
                   for r in rows)  # fmt: skip
        corrs = [abs(r["corr"]) for r in rows]
        assert corrs == sorted(corrs, reverse=True)
    gates = {(r["layer"], r["gate"]) for r in report["saturation"]}
    assert gates == {(l, g) for l in range(2) for g in "ifo"}
    assert report["chars"] == len(text.read_text())


@pytest.mark.slow
def test_cells_writes_pictures(checkpoint, tmp_path, run_cli):
    ckpt, text = checkpoint
    out = tmp_path / "pics"
    code, shown, err = run_cli("cells", ckpt, "--text", text, "--out", out)
    assert code == 0, err
    assert "best units per feature" in shown and "gate saturation" in shown
    names = {p.name for p in out.iterdir()}
    assert {f"cell_{n}.png" for n in FEATURE_NAMES} <= names
    assert {"cells.html", "saturation.png", "cells.json"} <= names
    page = (out / "cells.html").read_text()
    assert "<title>gatescope: interpretable cells</title>" in page
    assert page.count("<pre ") == sum(1 for n in FEATURE_NAMES if f"cell_{n}.png" in names)


def test_cells_errors(checkpoint, tmp_path, run_cli):
    ckpt, text = checkpoint
    code, _, err = run_cli("cells", ckpt, "--text", tmp_path / "none.py")
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli("cells", tmp_path / "none.st", "--text", text)
    assert code == 2 and "no such file" in err
