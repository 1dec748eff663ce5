"""The explorer's data (gatescope.viz.explorer) and the `gatescope explore` command.

What the page shows is checked here against independent computations: the stored values
against the layer's trace, the stored influence against `gatescope.inspect.input_influence`
(itself checked in test_inspect.py), the correlations against numpy, the predictions against
a softmax. The page
itself is driven in a real browser in test_explorer_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

import numpy as np
import pytest

import gatescope as gs
from gatescope import charlm as cl
from gatescope import inspect as gi
from gatescope import model as model_mod
from gatescope.train import TrainConfig, fit
from gatescope.viz import explorer as ex

TEXT = 'def f(x):\n    """Doc."""\n    return (x + 1) * 2  # two\n' * 3


def one_hot_text(text: str):
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    return chars, ids, np.eye(len(chars))[ids][None]  # (1, N, V)


def b64(s: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype)


# ----------------------------------------------------------------------------- stored values


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_stored_values_are_the_trace_within_half_a_quantisation_step(arch, bits):
    chars, ids, x = one_hot_text(TEXT)
    layer = {"lstm": gs.LSTM, "gru": gs.GRU, "rnn": gs.RNN}[arch](len(chars), 6, 2, seed=1)
    data = ex.build_data(layer, x, TEXT, bits=bits, grad_positions=0)
    layer(x)  # the reference: the layer's own trace, (L, B, T, H)
    assert list(data["quantities"]) == [q for q in ex.QUANTITY_ORDER if q in layer.trace]
    for q, ref in layer.trace.items():
        for k in range(2):
            want = ref[k, 0].T  # (H, N)
            got = ex.dequantised(data, q, k)
            step = b64(data["quantities"][q]["layers"][k]["step"], "<f4")
            err = np.abs(got - want)
            assert (err <= step[:, None] / 2 + 1e-6 * (1 + np.abs(want))).all(), (q, k)
    assert data["n"] == len(TEXT) and data["units"] == 6 and data["layers"] == 2


def test_colour_ranges_follow_the_quantity():
    chars, ids, x = one_hot_text(TEXT)
    data = ex.build_data(gs.LSTM(len(chars), 5, seed=0), x, TEXT, grad_positions=0)
    q = data["quantities"]
    for gate in "ifo":
        assert q[gate]["cmap"] == "seq" and q[gate]["domains"][0] == {
            "lo": [0.0] * 5,
            "hi": [1.0] * 5,
        }
    for s in "hg":
        assert q[s]["cmap"] == "div" and q[s]["domains"][0]["hi"] == [1.0] * 5
    c = ex.dequantised(data, "c", 0)  # the cell state: symmetric, per unit, its max |c|
    np.testing.assert_allclose(q["c"]["domains"][0]["hi"], np.abs(c).max(axis=1), rtol=1e-4)
    relu = gs.RNN(len(chars), 4, nonlinearity="relu", seed=0)
    d = ex.build_data(relu, x, TEXT, grad_positions=0)["quantities"]["h"]
    assert d["cmap"] == "seq" and d["domains"][0]["lo"] == [0.0] * 4


def test_colour_index_and_expected_colour():
    np.testing.assert_array_equal(ex.colour_index([-1, 0, 1, 5, -9], -1, 1), [0, 128, 255, 255, 0])
    assert ex.colour_index(3.0, 2.0, 2.0) == 128  # an empty range gives the middle
    for name in ("div", "seq", "grad"):
        lut = ex.colour_lut(name)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
        assert len({tuple(c) for c in lut}) > 200  # a real gradient, no flat stretches
    div = ex.colour_lut("div")
    assert div[0, 2] > div[0, 0] and div[255, 0] > div[255, 2]  # blue low, red high
    assert div[128].min() > 230  # near white in the middle
    with pytest.raises(ValueError, match="colour table"):
        ex.colour_lut("rainbow")


# ----------------------------------------------------------------------------- influence
# (the measurement itself: tests/test_inspect.py)


def test_build_data_stores_influence_windows_and_predicted_classes():
    chars, ids, x = one_hot_text(TEXT)
    layer, head = gs.LSTM(len(chars), 8, seed=0), gs.Linear(8, len(chars), seed=1)
    data = ex.build_data(
        layer, x, TEXT, head=head, labels=chars, grad_positions=[5, 60, 150], grad_window=20
    )
    g = data["gradients"]
    pos, starts, offsets = (b64(g[k], "<i4") for k in ("positions", "starts", "offsets"))
    vals = b64(g["values"], "<f4")
    np.testing.assert_array_equal(pos, [5, 60, 150])
    np.testing.assert_array_equal(starts, [0, 41, 131])
    np.testing.assert_array_equal(np.diff(offsets), [6, 20, 20])
    ref = gi.input_influence(layer, x, [(0, 60)], window=20, head=head)[0]
    np.testing.assert_allclose(vals[offsets[1] : offsets[2]], ref, rtol=1e-6)
    y, _ = layer(x)
    k = np.argmax(y[0, 150] @ head.params["weight"].T + head.params["bias"])
    assert g["what"][2] == chars[k] and "predicted class" in g["measure"]


# ----------------------------------------------------------------------------- correlations, predictions


def test_correlations_are_pearson_r_per_unit_quantity_and_layer():
    chars, ids, x = one_hot_text(TEXT)
    layer = gs.LSTM(len(chars), 6, 2, seed=3)
    feats = {
        "space": np.array([c == " " for c in TEXT], float),
        "pos": np.arange(len(TEXT)) % 17,
        "flat": np.ones(len(TEXT)),
    }
    data = ex.build_data(layer, x, TEXT, features=feats, grad_positions=0)
    layer(x)
    assert data["features"] == ["space", "pos", "flat"]
    for q in ("h", "f", "c"):
        for k in range(2):
            corr = data["quantities"][q]["corr"][k]  # (H, F) lists
            for u in range(6):
                a = layer.trace[q][k, 0, :, u]
                for j, name in enumerate(("space", "pos")):
                    want = np.corrcoef(a, feats[name])[0, 1]
                    assert corr[u][j] == pytest.approx(want, abs=6e-4)
                assert corr[u][2] is None  # a constant feature has no correlation


def test_predictions_are_the_top_k_of_the_softmax_with_the_actual_next_char():
    chars, ids, x = one_hot_text(TEXT)
    layer, head = gs.GRU(len(chars), 8, seed=0), gs.Linear(8, len(chars), seed=1)
    targets = np.append(ids[1:], -1)
    data = ex.build_data(
        layer, x, TEXT, head=head, labels=chars, targets=targets, top_k=4, grad_positions=0
    )
    p = data["predictions"]
    y, _ = layer(x)
    logits = y[0] @ head.params["weight"].T + head.params["bias"]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    idx = b64(p["idx"], "<u2").reshape(-1, 4)
    pr = b64(p["p"], "<u2").reshape(-1, 4) / 65535
    np.testing.assert_array_equal(idx, np.argsort(-probs, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(pr, np.sort(probs, axis=1)[:, ::-1][:, :4], atol=1e-5)
    tp = b64(p["target_p"], "<u2")
    np.testing.assert_allclose(tp[:-1] / 65535, probs[np.arange(len(TEXT) - 1), ids[1:]], atol=1e-5)
    assert tp[-1] == 65535 and p["labels"] == chars


# ----------------------------------------------------------------------------- the page


def test_page_is_self_contained_and_its_policy_allows_only_its_own_code():
    text = 'x = "</script><script>alert(1)</script>" <!-- \u2028 & é\n'
    chars, ids, x = one_hot_text(text)
    data = ex.build_data(gs.RNN(len(chars), 3, seed=0), x, text, grad_positions=2, title="<b>t</b>")
    page = ex.render_html(data)
    assert page.count("</script>") == 2  # the data block and the code block close, nothing else
    assert "<!--" not in page
    assert not re.search(r"https?://", page), "the page must not name any URL"
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert csp.startswith("default-src &#x27;none&#x27;") or csp.startswith("default-src 'none'")
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    for block in (style, script):
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"sha256-{digest}" in csp
    blob = re.search(
        r'<script type="application/json" id="gs-data">(.*?)</script>', page, re.S
    ).group(1)
    assert json.loads(blob)["tokens"] == text
    assert "<title>&lt;b&gt;t&lt;/b&gt;</title>" in page


def test_write_html_reports_the_size_and_leaves_no_temporary_file(tmp_path):
    chars, ids, x = one_hot_text(TEXT)
    data = ex.build_data(gs.LSTM(len(chars), 4, seed=0), x, TEXT, grad_positions=0)
    out = tmp_path / "e.html"
    size = ex.write_html(out, data)
    assert out.stat().st_size == size and [p.name for p in tmp_path.iterdir()] == ["e.html"]
    assert ex.summary(data).startswith(f"{len(TEXT):,} steps")


def test_large_texts_switch_to_8_bits():
    N, V = 20_000, 3
    x = np.eye(V)[np.arange(N) % V][None]
    data = ex.build_data(gs.LSTM(V, 70, seed=0), x, "abc" * (N // 3) + "ab", grad_positions=0)
    assert data["bits"] == 8  # 6 quantities x 70 units x 20,000 steps > MAX_16BIT_VALUES
    assert len(ex.render_html(data)) < 6 * 70 * N * 4 / 3 + 1e6  # base64 of one byte each


def test_build_data_can_store_only_some_quantities():
    chars, ids, x = one_hot_text(TEXT)
    layer = gs.LSTM(len(chars), 4, seed=0)
    data = ex.build_data(layer, x, TEXT, quantities=["c", "h"], grad_positions=0)
    assert list(data["quantities"]) == ["h", "c"]  # the page's order: h first
    with pytest.raises(ValueError, match="quantities must be some of i, f, g, o, c, h"):
        ex.build_data(layer, x, TEXT, quantities=["z"])


def test_build_data_validates_its_arguments():
    layer = gs.LSTM(2, 3, seed=0)
    x = np.zeros((1, 4, 2))
    with pytest.raises(ValueError, match="one character per step"):
        ex.build_data(layer, x, "abc")
    with pytest.raises(ValueError, match=r"shape \(B, T, D=2\)"):
        ex.build_data(layer, np.zeros((1, 4, 3)), "abcd")
    with pytest.raises(ValueError, match="bits"):
        ex.build_data(layer, x, "abcd", bits=12)
    with pytest.raises(ValueError, match="feature 'f'"):
        ex.build_data(layer, x, "abcd", features={"f": [1, 2]})
    with pytest.raises(ValueError, match="labels"):
        ex.build_data(layer, x, "abcd", labels=["a"])


# ----------------------------------------------------------------------------- in a notebook


def srcdoc_of(frame: str) -> str:
    """The srcdoc attribute of an <iframe> element, decoded as a browser's parser does."""
    import html.parser

    found: list[str] = []

    class Parser(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "iframe":
                found.append(dict(attrs)["srcdoc"])

    Parser(convert_charrefs=True).feed(frame)
    assert len(found) == 1, frame[:200]
    return found[0]


def iframe_attrs(frame: str) -> dict[str, str]:
    tag = re.match(r"<iframe\b([^>]*)>", frame, re.S)
    assert tag, frame[:200]
    return dict(re.findall(r'([a-z-]+)="([^"]*)"', tag.group(1)))


def test_page_displays_as_a_sandboxed_iframe_holding_exactly_the_page():
    text = "q = \"a\" & 'b' <tag> &amp; &quot; </iframe> \u2028 é\n"  # quotes, & and a fake end tag
    chars, ids, x = one_hot_text(text)
    data = ex.build_data(
        gs.GRU(len(chars), 3, seed=0), x, text, grad_positions=2, title='"t" & <u>'
    )
    shown = ex.page(data)
    frame = shown._repr_html_()
    assert frame.startswith("<iframe ") and frame.endswith("></iframe>")
    assert frame.count("<") == 2 and frame.count(">") == 2  # the page inside is all escaped
    attrs = iframe_attrs(frame)
    assert attrs["sandbox"] == "allow-scripts"  # scripts run; no allow-same-origin
    assert "allow-same-origin" not in frame.split("srcdoc=")[0]
    assert set(attrs) == {"title", "sandbox", "style", "srcdoc"}
    assert srcdoc_of(frame) == ex.render_html(data) == shown.html()
    # the characters that would end the attribute or start a reference are references
    raw = attrs["srcdoc"]
    assert '"' not in raw and "'" not in raw and "<" not in raw
    assert re.sub(r"&(amp|lt|gt|quot|#x27);", "", raw).count("&") == 0
    assert "&amp;amp;" in raw  # the text's own "&amp;" survives as itself
    assert attrs["title"] == "&quot;t&quot; &amp; &lt;u&gt;"
    assert "width: 100%; height: 760px" in attrs["style"]


def test_page_size_and_save(tmp_path):
    chars, ids, x = one_hot_text(TEXT)
    data = ex.build_data(gs.LSTM(len(chars), 4, seed=0), x, TEXT, grad_positions=0)
    for width, height, style in [
        (900, 500.5, "width: 900px; height: 500.5px"),
        ("80%", "40em", "width: 80%; height: 40em"),
        (" 640 ", "30vh", "width: 640px; height: 30vh"),
    ]:
        frame = ex.page(data, width=width, height=height)._repr_html_()
        assert style in iframe_attrs(frame)["style"]
    assert "width: 100px" in iframe_attrs(ex.page(data, width="100")._repr_html_())["style"]
    for bad in (0, -3, "0px", "1e3px", "calc(100% - 2px)", "50%;x", True, float("nan"), None):
        with pytest.raises(ValueError, match="height must be"):
            ex.page(data, height=bad)
    with pytest.raises(ValueError, match="width must be"):
        ex.page(data, width="wide")
    with pytest.raises(ValueError, match="data must be an explorer data object"):
        ex.page({"n": 3})
    shown = ex.page(data)
    size = shown.save(tmp_path / "p.html")
    assert (tmp_path / "p.html").read_text(encoding="utf-8") == ex.render_html(data)
    assert size == (tmp_path / "p.html").stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"]
    assert repr(shown) == f"ExplorerPage('gatescope explorer': {ex.summary(data)})"
    assert shown.data is data


def test_viz_names_its_modules_and_sets_the_notebook_figure_formatter(monkeypatch):
    IPython = pytest.importorskip("IPython", reason="IPython is not installed")
    from IPython.core.formatters import DisplayFormatter
    from matplotlib.figure import Figure

    from gatescope import viz

    assert viz.explorer is ex and viz.explorer.page is ex.page

    class Shell:
        display_formatter = DisplayFormatter()

    shell = Shell()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    assert "image/png" not in shell.display_formatter.format(fig)[0]  # what a notebook had
    viz._ipython_figure_formatter()
    png = shell.display_formatter.format(fig)[0]["image/png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # a figure format the user chose (``%config InlineBackend.figure_formats``) is kept
    chosen = Shell()
    chosen.display_formatter = DisplayFormatter()
    chosen.display_formatter.formatters["image/svg+xml"].for_type(Figure, lambda f: "<svg/>")
    monkeypatch.setattr(IPython, "get_ipython", lambda: chosen)
    viz._ipython_figure_formatter()
    formats = chosen.display_formatter.format(fig)[0]
    assert formats["image/svg+xml"] == "<svg/>" and "image/png" not in formats
    # a terminal IPython shows text only: no PNG formatter is set there
    terminal = Shell()
    terminal.display_formatter = DisplayFormatter(active_types=["text/plain"])
    monkeypatch.setattr(IPython, "get_ipython", lambda: terminal)
    viz._ipython_figure_formatter()
    printers = terminal.display_formatter.formatters["image/png"]
    assert ("matplotlib.figure", "Figure") not in printers.deferred_printers
    assert Figure not in printers.type_printers


@pytest.mark.slow
def test_a_notebook_shows_the_page_inline_and_figures_as_png(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed")
    cells = [
        "import numpy as np, gatescope as gs\n"
        "from gatescope import inspect as gi, viz\n"
        "from gatescope.model import SequenceModel\n"
        "from gatescope.tasks import get_task\n"
        "task = get_task('order', 12)\n"
        "model = SequenceModel.for_task(task, 'lstm', 6, seed=0)\n"
        "batch = task.make_batch(2, np.random.default_rng(0))",
        "viz.explorer.page(viz.explorer.from_sequence_model(model, task, batch), height=600)",
        "viz.gate_heatmaps(gi.gate_activations(model.recurrent, batch.x[0]), 'lstm')",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    page_out, fig_out = (nb.cells[k].outputs for k in (1, 2))
    assert [o.output_type for o in page_out] == ["execute_result"]
    frame = page_out[0].data["text/html"]
    assert iframe_attrs(frame)["sandbox"] == "allow-scripts"
    assert "height: 600px" in iframe_attrs(frame)["style"]
    assert '"kind":"steps"' in srcdoc_of(frame)
    assert page_out[0].data["text/plain"].startswith("ExplorerPage('gatescope explorer': 24 steps")
    png = base64.b64decode(fig_out[0].data["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# ----------------------------------------------------------------------------- sources


def test_task_glyphs_show_symbols_values_and_markers():
    from gatescope.tasks import get_task

    adding = get_task("adding", 10)
    batch = adding.make_batch(2, np.random.default_rng(0))
    glyphs, info, emph = ex.task_glyphs(adding, batch.x)
    assert len(glyphs) == 20 and emph.sum() == 4  # two marked steps per sample
    assert glyphs[0] == str(int(batch.x[0, 0, 0] * 10)) and info[0].startswith("value ")
    order = get_task("order", 20)
    glyphs, _, _ = ex.task_glyphs(order, order.make_batch(1, np.random.default_rng(0)).x)
    assert glyphs[0] == "B" and glyphs[-1] == "E" and set(glyphs) <= set("abcdBEXY")
    recall = get_task("recall", 8)
    glyphs, info, _ = ex.task_glyphs(recall, recall.make_batch(1, np.random.default_rng(0)).x)
    assert glyphs[0] in "01234567" and set(glyphs[1:]) == {"~"}


def test_from_sequence_model_reads_out_at_the_last_step():
    from gatescope.tasks import get_task

    task = get_task("order", 24)
    model = model_mod.SequenceModel.for_task(task, "lstm", 6, seed=0)
    batch = task.make_batch(3, np.random.default_rng(1))
    data = ex.from_sequence_model(model, task, batch)
    assert data["kind"] == "steps" and data["n"] == 72 and data["seq_len"] == 24
    pos = b64(data["gradients"]["positions"], "<i4")
    np.testing.assert_array_equal(pos, [23, 47, 71])  # the read-out step of each sample
    assert data["gradients"]["window"] == 24
    has = b64(data["predictions"]["has"], "<u1")
    assert has.sum() == 3 and has[23] == 1
    assert "is 'X'" in data["features"] and "step" in data["features"]
    assert data["predictions"]["labels"] == list(task.class_names)


def test_from_charlm_uses_the_text_features():
    vocab = cl.Vocab.build(TEXT)
    model = cl.new_model(vocab.size, hidden_size=8, num_layers=2, seed=0)
    text = TEXT + "ü"  # a character outside the vocabulary is read as unknown, shown as is
    data = ex.from_charlm(model, vocab, text, grad_positions=4)
    assert data["tokens"] == text and data["layers"] == 2
    assert {"in_string", "in_comment", "bracket_depth"} <= set(data["features"])
    assert data["predictions"]["labels"][0] == "\ufffd"


# ----------------------------------------------------------------------------- the command


@pytest.fixture
def task_ckpt(tmp_path):
    from gatescope.tasks import get_task

    task = get_task("adding", 30)
    model = model_mod.SequenceModel.for_task(task, "gru", 5, seed=0)
    path = tmp_path / "adding.safetensors"
    model_mod.save_model(path, model, {"task": task.to_dict(), "step": 7})
    return path


@pytest.fixture
def lm_ckpt(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(3):
        (folder / f"m{i}.py").write_text(TEXT * (i + 1))
    corpus = cl.load_corpus(cl.CorpusSpec(paths=(str(folder),)))
    model = cl.new_model(corpus.vocab.size, hidden_size=8, num_layers=1)
    config = TrainConfig(steps=1, batch_size=2, carry_state=True, early_stop=False)
    path = tmp_path / "lm.safetensors"
    fit(cl.TextTask(corpus, seq_len=8), model, config, checkpoint_path=path, progress=False)
    return path


def test_cli_explore_a_task_model(task_ckpt, tmp_path, run_cli):
    out = tmp_path / "x.html"
    code, stdout, err = run_cli("explore", task_ckpt, "--task-samples", 2, "-o", out)
    assert code == 0, err
    assert f"wrote {out}" in stdout and "60 steps" in stdout
    page = out.read_text()
    assert "adding.safetensors" in page and '"kind":"steps"' in page


def test_cli_explore_a_language_model(lm_ckpt, tmp_path, run_cli):
    text = tmp_path / "t.py"
    text.write_text(TEXT * 4)
    out = tmp_path / "lm.html"
    code, stdout, err = run_cli(
        "explore",
        lm_ckpt,
        "--text",
        text,
        "--max-chars",
        100,
        "--grad-positions",
        3,
        "-o",
        out,
    )
    assert code == 0, err
    assert "100 steps" in stdout and "influence at 3 position(s)" in stdout
    assert "first 100 of" in out.read_text()
    # without --text: the model's own validation text
    code, stdout, err = run_cli(
        "explore", lm_ckpt, "--max-chars", 50, "--grad-positions", 0, "-o", out
    )
    assert code == 0, err and "50 steps" in stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.safetensors"], "no such file"),
        (["{task}", "--text", "{task}"], "task model"),
        (["{lm}", "--task-samples", "3"], "language model"),
        (["{lm}", "--text", "nope.txt"], "--text nope.txt: no such file"),
        (["{bad}"], "not a model file"),
        (["{garbage}"], "garbage"),
        (["{task}", "--quantities", "h,q"], "quantities must be some of r, z, n, h"),
    ],
)
def test_cli_explore_errors_are_one_line(args, message, task_ckpt, lm_ckpt, tmp_path, run_cli):
    from gatescope.checkpoint import save_checkpoint

    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, {"w": np.zeros(2)}, {"kind": "something else"})
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00" * 20)
    names = {"{task}": task_ckpt, "{lm}": lm_ckpt, "{bad}": bad, "{garbage}": garbage}
    argv = [str(names.get(a, a)) for a in args]
    code, out, err = run_cli("explore", *argv, "-o", tmp_path / "o.html")
    assert code == 2 and message in err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "o.html").exists()


def test_cli_explore_rejects_both_sources(task_ckpt, run_cli):
    code, _, err = run_cli("explore", task_ckpt, "--text", "a", "--task-samples", "2")
    assert code == 2 and "not allowed with" in err
