"""Every figure draws the numbers it is given, on the promised scales, and writes a PNG
that is not blank; the HTML report is self-contained."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from matplotlib.image import imread

import gatescope as gs
from gatescope import inspect as gi
from gatescope import viz
from gatescope.viz.demo_page import render_report


def _axis(fig, label):
    found = [ax for ax in fig.axes if ax.get_label() == label]
    assert found, f"no axis labelled {label!r} in {[a.get_label() for a in fig.axes]}"
    return found[0]


def assert_png_ok(path):
    """Written, a real image, and not blank: several colours, not one flat field."""
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    rgb = img[..., :3]
    assert rgb.std() > 0.05
    assert len(np.unique(rgb.reshape(-1, 3)[::7], axis=0)) > 20


@pytest.fixture(scope="module")
def lstm_and_x():
    rng = np.random.default_rng(0)
    lstm = gs.LSTM(4, 6, seed=0)
    x = rng.normal(size=(5, 15, 4))
    return lstm, x


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_gate_heatmaps_show_the_trace_on_fixed_scales(arch, tmp_path):
    rng = np.random.default_rng(1)
    layer = {"lstm": gs.LSTM, "gru": gs.GRU, "rnn": gs.RNN}[arch](4, 6, seed=0)
    x = rng.normal(size=(3, 15, 4))
    acts = gi.gate_activations(layer, x, index=1)
    fig = viz.gate_heatmaps(acts, arch, mark_steps=[0])
    names = gi.GATES[arch] + gi.STATES[arch]
    for name in names:
        ax = _axis(fig, name)
        im = ax.images[0]
        np.testing.assert_array_equal(np.asarray(im.get_array()), layer.trace[name][1].T)
        lo, hi = im.get_clim()
        if name in gi.GATES[arch]:
            assert (lo, hi) == (0.0, 1.0)
        else:
            assert lo == -hi and hi == pytest.approx(np.abs(acts[name]).max())
            assert im.get_cmap().name == "RdBu_r"
        assert im.colorbar is not None
        assert ax.get_title(loc="left") and ax.get_ylabel() == "unit"
    assert fig.axes[len(names) - 1].get_xlabel() == "time step t"
    assert_png_ok(viz.save(fig, tmp_path / "g.png"))


def test_gate_heatmaps_name_what_is_missing():
    with pytest.raises(ValueError, match="lacks"):
        viz.gate_heatmaps({"h": np.zeros((2, 3))}, "lstm")


def test_gate_traces_figure_plots_the_means(lstm_and_x, tmp_path):
    lstm, x = lstm_and_x
    tr = gi.gate_traces(lstm, x)
    fig = viz.gate_traces_figure(tr, "lstm")
    for name in ("i", "f", "o", "c_norm"):
        ax = _axis(fig, name)
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), tr[name])
        if name != "c_norm":
            assert ax.get_ylim() == (0.0, 1.0)
    assert_png_ok(viz.save(fig, tmp_path / "t.png"))
    fig = viz.gate_traces_figure(gi.gate_traces(gs.RNN(4, 6), x), "rnn")
    assert_png_ok(viz.save(fig, tmp_path / "t_rnn.png"))


def test_hidden_states_side_by_side(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(15, 4))
    rnn, lstm = gs.RNN(4, 6), gs.LSTM(4, 6)
    panels = {"rnn": gi.gate_activations(rnn, x)["h"], "lstm": gi.gate_activations(lstm, x)["h"]}
    fig = viz.hidden_states_figure(panels)
    for name, a in panels.items():
        im = _axis(fig, name).images[0]
        np.testing.assert_array_equal(np.asarray(im.get_array()), a)
        assert im.get_clim() == (-1.0, 1.0)
    assert_png_ok(viz.save(fig, tmp_path / "h.png"))


def test_gradient_flow_figure_draws_the_measured_norms(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 12, 4))
    dy = np.zeros((4, 12, 6))
    dy[:, -1] = rng.normal(size=(4, 6))
    flows = {
        a: gi.gradient_flow(c(4, 6, seed=0), x, dy)
        for a, c in (("rnn", gs.RNN), ("gru", gs.GRU), ("lstm", gs.LSTM))
    }
    fig = viz.gradient_flow_figure({"untrained": flows, "again": {"lstm": flows["lstm"].to_dict()}})
    ax = _axis(fig, "untrained")
    assert ax.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in ax.lines}
    np.testing.assert_array_equal(lines["vanilla RNN: ||dL/dh||"].get_ydata(), flows["rnn"].h)
    np.testing.assert_array_equal(lines["LSTM: ||dL/dh||"].get_xdata(), np.arange(13))
    c = lines["LSTM: ||dL/dc||"].get_ydata()
    assert np.isnan(c[0])  # zero at the loss (it reads h only): not drawn on a log scale
    np.testing.assert_array_equal(c[1:], flows["lstm"].c[1:])
    assert_png_ok(viz.save(fig, tmp_path / "gf.png"))


@pytest.mark.slow
def test_forget_product_figure(tmp_path):
    rng = np.random.default_rng(4)
    lstm = gs.LSTM(4, 6, seed=0)
    x = rng.normal(size=(1, 20, 4))
    lstm(x)
    P = gi.forget_gate_product(lstm.trace["f"])[0]
    cut = gi.cell_state_jacobian(lstm, x, cut_h=True)[0]
    full = gi.cell_state_jacobian(lstm, x)[0]
    fig = viz.forget_product_figure(P, cut, full, units=[0, 3])
    ax = _axis(fig, "units")
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), P[:, 0])
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), cut[::3, 0])
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), 20 - np.arange(21))
    assert_png_ok(viz.save(fig, tmp_path / "fp.png"))
    # identical inputs: the error panel says so instead of drawing nothing
    fig = viz.forget_product_figure(P, P.copy())
    assert any("identical" in t.get_text() for t in _axis(fig, "error").texts)


def test_saturation_figure_scatters_the_fractions(tmp_path):
    sat = {
        "f": {"left": np.array([0.0, 0.5, 1.0]), "right": np.array([1.0, 0.25, 0.0])},
        "i": {"left": np.array([0.1, 0.2, 0.3]), "right": np.array([0.3, 0.2, 0.1])},
    }
    fig = viz.saturation_figure(sat, "lstm")
    for name, v in sat.items():
        ax = _axis(fig, name)
        offsets = ax.collections[0].get_offsets()
        np.testing.assert_array_equal(offsets, np.column_stack([v["left"], v["right"]]))
        assert ax.get_xlim() == ax.get_ylim() == (-0.03, 1.03)
    assert_png_ok(viz.save(fig, tmp_path / "s.png"))
    with pytest.raises(ValueError, match="no gates"):
        viz.saturation_figure({}, "rnn")


def test_training_curves_and_sequence(tmp_path):
    hist = {
        "lstm": [{"step": s, "loss": 2.0 / s, "metric": s / 300} for s in (100, 200, 300)],
        "rnn": [{"step": s, "loss": 2.0, "metric": 0.12} for s in (100, 200, 300)],
    }
    fig = viz.training_curves_figure(hist, chance=0.125, target=0.99)
    ax = _axis(fig, "accuracy")
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [1 / 3, 2 / 3, 1.0])
    assert_png_ok(viz.save(fig, tmp_path / "tc.png"))
    x = np.random.default_rng(0).normal(size=(30, 8))
    fig = viz.sequence_figure(x)
    np.testing.assert_array_equal(np.asarray(_axis(fig, "x").images[0].get_array()), x.T)
    assert_png_ok(viz.save(fig, tmp_path / "seq.png"))


def _summary():
    flow = {"h_at_loss": 1.0, "h_at_symbol": 1e-5, "h_ratio": 1e-5, "loss": 2.0}
    return {
        "task": {
            "name": "recall",
            "length": 20,
            "n_symbols": 8,
            "noise_std": 0.5,
            "chance": 0.125,
            "solved_at": 0.99,
        },
        "training": {
            "hidden_size": 8,
            "lr": 0.01,
            "batch_size": 4,
            "clip_norm": 1.0,
            "max_steps": 10,
        },
        "models": {
            a: {
                "test_accuracy": 0.5,
                "steps": 10,
                "seconds": 1.0,
                "solved": a == "lstm",
                "params": 100,
            }
            for a in ("lstm", "gru", "rnn")
        },
        "gradient_flow": {
            a: {"untrained": {**flow, "c_ratio": 0.1, "c_at_symbol": 0.1}, "trained": flow}
            for a in ("lstm", "gru", "rnn")
        },
        "forget_gate_product": {"max_rel_diff": 1e-16, "units": 8, "length": 20},
        "saturation": {"lstm": {"f": {"mean_left": 0.1, "mean_right": 0.5}}},
        "parameter_counts": [{"label": "D=4, H=32", "rnn": 1184, "gru": 3552, "lstm": 4736}],
    }


def test_report_is_self_contained_and_embeds_every_image(tmp_path):
    fig = viz.sequence_figure(np.random.default_rng(0).normal(size=(10, 3)))
    png = viz.png_bytes(fig)
    page = render_report(_summary(), {"task.png": png, "training.png": png})
    assert page.startswith("<!doctype html>\n")  # the shared shell (gatescope.viz.page)
    assert page.endswith("</main>\n</body>\n</html>\n") and "<title>gatescope demo" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "@import" not in page
    srcs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(srcs) == 2 and base64.b64decode(srcs[0]) == png
    assert "4,736" in page and "recall" in page and "<script" not in page


# ------------------------------------------------------------------------------ shared pieces


def test_one_page_shell_for_every_page():
    from gatescope.viz import explorer
    from gatescope.viz.page import html_page
    from gatescope.viz.units import units_page

    shell = html_page("t & u", "<p>x</p>\n", style="p{color:red}", csp="default-src 'none'")
    assert shell.startswith('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n')
    assert 'content="default-src &#x27;none&#x27;"' in shell and "<title>t &amp; u</title>" in shell
    assert "<style>p{color:red}</style>\n</head>\n<body>\n<p>x</p>\n</body>\n</html>\n" in shell
    layer = gs.RNN(2, 3, seed=0)
    data = explorer.build_data(layer, np.eye(2)[None], "ab", grad_positions=0)
    pages = [
        explorer.render_html(data),
        render_report(_summary(), {}),
        units_page(["<p>s</p>"], "units"),
    ]
    heads = [p[: p.index("<title>")] for p in pages]
    for page, head in zip(pages, heads):  # the same head, up to the explorer's extra lines
        assert head.startswith('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">')
        assert '<meta name="viewport"' in head and '<link rel="icon" href="data:,">' in page
    assert "Content-Security-Policy" in heads[0] and "Content-Security-Policy" not in heads[1]


def test_every_drawing_names_an_architecture_the_same_way():
    from gatescope.viz import capacity, demo_page, figures, style

    assert viz.ARCH_NAMES is style.ARCH_NAMES is figures.ARCH_NAMES is demo_page.ARCH_NAMES
    assert viz.ARCH_COLORS is style.ARCH_COLORS is capacity.ARCH_COLORS is figures.ARCH_COLORS
    assert style.ARCH_NAMES == {"lstm": "LSTM", "gru": "GRU", "rnn": "vanilla RNN"}


def _imports(node) -> list[str]:
    """The gatescope modules an import statement names ('.x' relative ones included)."""
    import ast

    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "gatescope"]
    if isinstance(node, ast.ImportFrom):
        mod = "." * node.level + (node.module or "")
        return [mod] if node.level or mod.split(".")[0] == "gatescope" else []
    return []


def test_inspect_and_viz_import_the_package_without_fallbacks():
    """A broken module of the package must fail loudly, not turn into a skip or a default;
    and what draws does not import what trains (the sweep runner, the fit loop)."""
    import ast
    from pathlib import Path

    import gatescope

    root = Path(gatescope.__file__).parent
    files = sorted([*(root / "inspect").glob("*.py"), *(root / "viz").glob("*.py")])
    assert len(files) >= 10
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Try):
                caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
                guarded = [m for n in node.body for s in ast.walk(n) for m in _imports(s)]
                assert not (caught & {"ImportError", "ModuleNotFoundError"} and guarded), (
                    f"{path.name}: fallback import of {guarded}"
                )
            for mod in _imports(node):
                assert not mod.startswith(("gatescope.sweep", "gatescope.train")), (path, mod)
