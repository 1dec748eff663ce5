"""`gatescope demo --quick` end to end, and `gatescope plot` on the models it saves."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from test_viz import assert_png_ok

from gatescope.cli import main
from gatescope.demo import FIGURES
from gatescope.model import load_model

pytestmark = pytest.mark.slow  # the module's fixture runs the demo (about 8 s)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    code = main(["demo", "--quick", "--out", str(out), "--length", "10", "--no-progress"])
    assert code == 0
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


def test_demo_prints_the_table_and_path(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["demo", "--quick", "--out", str(out), "--length", "6", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "LSTM" in printed and "vanilla RNN" in printed
    assert str(out / "report.html") in printed


def test_demo_update_bias_reaches_the_gru_and_the_report(tmp_path, capsys):
    out = tmp_path / "d"
    argv = ["demo", "--quick", "--out", str(out), "--length", "6", "--no-progress"]
    assert main([*argv, "--update-bias", "3"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["training"]["update_bias"] == 3.0
    model, _ = load_model(out / "gru.safetensors")
    assert model.config.layer_options == {"update_bias": 3.0}
    assert "update-gate bias to 3.0" in (out / "report.html").read_text()
    capsys.readouterr()
    assert main([*argv, "--update-bias", "nan"]) == 2
    assert "--update-bias must be a finite number" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["gates", "traces", "gradflow", "saturation"])
@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_plot_each_instrument(demo, tmp_path, what, arch, capsys):
    png = tmp_path / f"{arch}-{what}.png"
    code = main(
        ["plot", what, str(demo / f"{arch}.safetensors"), "--out", str(png), "--batch", "4"]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == str(png)
    assert_png_ok(png)


def test_plot_errors(demo, tmp_path, capsys):
    assert main(["plot", "saturation", str(demo / "rnn.safetensors")]) == 2
    assert "no gates" in capsys.readouterr().err
    assert main(["plot", "gates", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert main(["plot", "gates", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert main(["plot", "gates", str(demo / "rnn.safetensors"), "--out", "x.jpg"]) == 2


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
