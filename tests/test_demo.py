"""`gatescope demo --quick` end to end, and `gatescope plot` on the models it saves."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from test_viz import assert_png_ok

from gatescope.demo import FIGURES, DemoConfig, run_demo
from gatescope.model import load_model

pytestmark = pytest.mark.slow  # the module's fixture runs the demo (about 8 s)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """What `gatescope demo --quick --length 10` writes (the run_cli fixture is per test, so
    the shared run goes through run_demo with the config the command builds; the command
    itself is run by test_demo_prints_the_table_and_path)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    run_demo(out, DemoConfig.quick(length=10), progress=False)
    return out


def test_demo_writes_every_figure(demo):
    for name in FIGURES:
        assert_png_ok(demo / name)
    for arch in ("lstm", "gru", "rnn"):
        assert (demo / f"{arch}.safetensors").is_file()


def test_demo_summary(demo):
    s = json.loads((demo / "summary.json").read_text())
    assert s["task"]["name"] == "recall" and s["task"]["length"] == 10
    assert set(s["models"]) == {"lstm", "gru", "rnn"}
    for arch, m in s["models"].items():
        assert 0.0 <= m["test_accuracy"] <= 1.0
        assert m["steps"] == 20 and m["seconds"] > 0
        gf = s["gradient_flow"][arch]
        for when in ("untrained", "trained"):
            curve = s["gradient_flow"]["curves"][when][arch]
            assert len(curve["h"]) == 11 and curve["steps_back"] == list(range(11))
            assert gf[when]["h_at_loss"] == curve["h"][0]
            assert gf[when]["h_at_symbol"] == curve["h"][9]
            assert ("c" in curve) == (arch == "lstm")
    # the step-by-step gradients agree with one full backward pass
    assert s["gradient_flow"]["check"]["max_rel_diff_dstate0"] < 1e-10
    assert s["forget_gate_product"]["max_rel_diff"] < 1e-12
    assert 0 < s["gradient_flow"]["rnn_spectral_radius"]["untrained"] < 2
    for arch in ("lstm", "gru", "rnn"):
        assert 0.0 <= s["hidden"][arch]["saturated_fraction"] <= 1.0
    for gate in ("f", "i", "o"):
        sat = s["saturation"]["lstm"][gate]
        assert len(sat["left"]) == 8 and sat["mean_left"] == pytest.approx(np.mean(sat["left"]))
    counts = s["parameter_counts"][0]
    assert (counts["rnn"], counts["gru"], counts["lstm"]) == (1184, 3552, 4736)
    assert s["figures"] == list(FIGURES)


def test_demo_report_is_self_contained(demo):
    page = (demo / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(FIGURES)
    assert base64.b64decode(images[0]) == (demo / FIGURES[0]).read_bytes()
    for heading in ("The task", "Training", "Inside the trained LSTM", "gradient", "What it means"):
        assert heading in page


def test_demo_prints_the_table_and_path(tmp_path, run_cli):
    out = tmp_path / "d"
    res = run_cli("demo", "--quick", "--out", out, "--length", "6", "--no-progress")
    assert res.code == 0
    assert "LSTM" in res.out and "vanilla RNN" in res.out
    assert str(out / "report.html") in res.out


def test_demo_update_bias_reaches_the_gru_and_the_report(tmp_path, run_cli):
    out = tmp_path / "d"
    argv = ["demo", "--quick", "--out", out, "--length", "6", "--no-progress"]
    assert run_cli(*argv, "--update-bias", "3").code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["training"]["update_bias"] == 3.0
    model, _ = load_model(out / "gru.safetensors")
    assert model.config.layer_options == {"update_bias": 3.0}
    assert "update-gate bias to 3.0" in (out / "report.html").read_text()
    res = run_cli(*argv, "--update-bias", "nan")
    assert res.code == 2
    assert "--update-bias must be a finite number" in res.err


def test_demo_patching_section_is_the_saved_lstm_own_numbers(demo):
    """The report's patching figures exist, and summary.json's maps, correlation and clamp
    curves are what inspect.patching computes again on the saved lstm.safetensors (float64);
    the page's sentences carry those numbers."""
    from gatescope.demo import float64_copy
    from gatescope.inspect import patching as gp
    from gatescope.tasks import task_from_dict

    for name in ("patching_coarse.png", "patching_c.png", "patching_attribution.png",
                 "patching_clamp.png"):  # fmt: skip
        assert name in FIGURES
        assert_png_ok(demo / name)
    pa = json.loads((demo / "summary.json").read_text())["patching"]
    model, meta = load_model(demo / "lstm.safetensors")
    exact, task = float64_copy(model), task_from_dict(meta["task"])
    clean, corrupted, y = gp.recall_pairs(task, pa["pairs"], pa["seed"])
    eye = np.eye(task.n_symbols)
    direction = eye[y] - eye[corrupted[:, 0].argmax(axis=1)]
    cm = gp.coarse_map(exact, clean, corrupted, direction=direction)
    assert list(pa["coarse"]) == list(cm.labels) == ["i", "f", "g", "o", "c", "h"]
    for j, q in enumerate(cm.labels):
        np.testing.assert_allclose(pa["coarse"][q], cm.recovered[:, j], rtol=1e-9, atol=1e-12)
    assert pa["metric"]["clean"] == pytest.approx(cm.clean, rel=1e-9)
    pm = gp.patching_map(exact, clean, corrupted, "c", direction=direction)
    np.testing.assert_allclose(pa["c"]["map"], pm.recovered, rtol=1e-9, atol=1e-12)
    assert pa["c"]["top_units"] == pm.top_units(5).tolist()
    t, u = np.unravel_index(np.argmax(pm.recovered), pm.recovered.shape)
    assert (pa["c"]["peak"]["step"], pa["c"]["peak"]["unit"]) == (t, u)
    am = gp.attribution_map(exact, clean, corrupted, "c", direction=direction)
    r = pa["attribution"]["correlation_with_patching"]
    assert r == pytest.approx(gp.correlation(pm, am), rel=1e-9)
    x, _, yc = gp.recall_pairs(task, pa["clamp_size"], pa["clamp_seed"])
    curves = gp.clamp_curve(exact, x, yc)
    assert pa["clamp"] == {k: v.tolist() for k, v in curves.items()}
    page = (demo / "report.html").read_text()
    assert "Where the LSTM keeps the symbol" in page
    assert f"the largest single entry is {pm.recovered[t, u]:.2f} (unit {u} at step {t})" in page
    assert f"r = {r:.2f}" in page
    assert (
        f"Holding the forget gate open (f = 1) from step 0 gives accuracy "
        f"{100 * curves['f=1'][0]:.1f}%" in page
    )


def test_demo_page_says_the_texts_not_the_chapter(demo):
    """The page names the two texts gatescope grew from before it refers to them, and never
    says "the seeds" or a bare "the chapter" (a reader has neither)."""
    page = (demo / "report.html").read_text()
    assert "grew from two texts" in page
    assert "seeds" not in page
    assert re.search(r"\b[Tt]he chapter", page) is None


@pytest.mark.parametrize("what", ["gates", "traces", "gradflow", "saturation"])
@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_plot_each_instrument(demo, tmp_path, what, arch, run_cli):
    png = tmp_path / f"{arch}-{what}.png"
    res = run_cli("plot", what, demo / f"{arch}.safetensors", "--out", png, "--batch", "4")
    assert res.code == 0
    assert res.out.strip() == str(png)
    assert_png_ok(png)


def test_plot_errors(demo, tmp_path, run_cli):
    res = run_cli("plot", "saturation", demo / "rnn.safetensors")
    assert res.code == 2 and "no gates" in res.err
    res = run_cli("plot", "gates", tmp_path / "missing.safetensors")
    assert res.code == 2 and "no such file" in res.err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    res = run_cli("plot", "gates", bad)
    assert res.code == 2
    assert res.err.startswith("error: ") and "Traceback" not in res.err
    assert run_cli("plot", "gates", demo / "rnn.safetensors", "--out", "x.jpg").code == 2


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_plot_draws_the_checkpoint_own_numbers(demo, arch):
    """The heatmap is the loaded model's own trace on the probe sequence, and the
    gradient-flow curve its own measured norms."""
    from gatescope import inspect as gi
    from gatescope.cli.plot import plot_figure
    from gatescope.demo import float64_copy
    from gatescope.model import load_model
    from gatescope.tasks import task_from_dict

    model, meta = load_model(demo / f"{arch}.safetensors")
    task = task_from_dict(meta["task"])
    exact = float64_copy(model)  # plot measures in float64
    probe = task.make_batch(6, np.random.default_rng(3))
    fig = plot_figure(model, task, "gates", seed=3, batch=6, index=2)
    acts = gi.gate_activations(exact.recurrent, probe.x[2])
    for name in gi.GATES[arch] + gi.STATES[arch]:
        ax = next(a for a in fig.axes if a.get_label() == name)
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), acts[name])
    fig = plot_figure(model, task, "gradflow", seed=3, batch=6)
    ax = next(a for a in fig.axes if a.get_label() == "this model")
    want = gi.model_gradient_flow(exact, probe).h
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), want)
