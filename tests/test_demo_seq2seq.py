"""`gatescope demo seq2seq --quick` end to end, through the command line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from gatescope.inspect.seq2seq import connectivity
from gatescope.model import read_model_file
from gatescope.seq2seq import Seq2Seq
from gatescope.seq2seq_demo import ATTENTIONS, FIGURES
from gatescope.tasks.seq2seq import get_seq2seq_task
from gatescope.train import evaluate_model


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from gatescope.cli import main

    out = tmp_path_factory.mktemp("s2s-demo")
    assert main(["demo", "seq2seq", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_quick_demo_writes_its_files(demo_dir, run_cli):
    for name in (*FIGURES, "summary.json", "report.html"):
        assert (demo_dir / name).stat().st_size > 0, name
    for name in FIGURES:
        assert (demo_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (demo_dir / "report.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.split("<main>")[1]
    summary = json.loads((demo_dir / "summary.json").read_text())
    for t in summary["translations"]:  # every translation shown is on the page
        assert t["input"] in page
    # the saved models are ordinary seq2seq checkpoints
    ckpt = demo_dir / summary["models"]["bahdanau"]["checkpoint"]
    r = run_cli("seq2seq", "translate", ckpt, "Sep 27, 1994", "--json")
    assert r.code == 0
    assert json.loads(r.out)[0]["input"] == "Sep 27, 1994"


def test_summary_numbers_are_real_evaluations(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    task = get_seq2seq_task("dates")
    n, seed = summary["test"]["n"], summary["test"]["seed"]
    for attention in ATTENTIONS:
        rec = summary["models"][attention]
        model, meta, _ = read_model_file(demo_dir / rec["checkpoint"])
        assert isinstance(model, Seq2Seq) and model.config.attention == attention
        again = evaluate_model(task, model, n=n, seed=seed)
        assert rec["exact_match"] == again["exact_match"]
        assert rec["token_accuracy"] == again["token_accuracy"]
        assert rec["steps"] == meta["step"]
        # the translations are this model's greedy decodes
        srcs = [t["input"] for t in summary["translations"]]
        outs = model.translate(task.encode(srcs), max_len=task.max_target_len + 5)
        assert [t[attention] for t in summary["translations"]] == [task.decode(o) for o in outs]


def test_summary_connectivity_is_measured(demo_dir):
    summary = json.loads((demo_dir / "summary.json").read_text())
    task = get_seq2seq_task("dates")
    ex = summary["example"]
    src = task.encode([ex["source"]])
    tgt = task.encode([ex["target"]], side="tgt", eos=True)
    for attention in ATTENTIONS:
        model, _, _ = read_model_file(demo_dir / summary["models"][attention]["checkpoint"])
        twin = Seq2Seq.from_config(dataclasses.replace(model.config, dtype="float64"))
        twin.load_params({k: v.astype(np.float64) for k, v in model.params.items()})
        np.testing.assert_allclose(
            np.array(ex["connectivity"][attention]), connectivity(twin, src, tgt)[0], rtol=1e-12
        )
    alpha = np.array(ex["attention"])
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-12)


def test_seq2seq_demo_refuses_memory_options(run_cli, tmp_path):
    r = run_cli("demo", "seq2seq", "--quick", "--length", "8", "--out", tmp_path / "x")
    assert r.code == 2 and "--length" in r.err and "Traceback" not in r.err
    r = run_cli("demo", "nonsense")
    assert r.code == 2


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_plot_connectivity_of_the_demo_models(demo_dir, run_cli, tmp_path, attention):
    summary = json.loads((demo_dir / "summary.json").read_text())
    ckpt = demo_dir / summary["models"][attention]["checkpoint"]
    png = tmp_path / "c.png"
    r = run_cli("seq2seq", "plot", "connectivity", ckpt, "Sep 27, 1994", "--out", png)
    assert r.code == 0, r.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and r.out.strip() == str(png)


def test_plot_connectivity_takes_one_text(demo_dir, run_cli, tmp_path):
    summary = json.loads((demo_dir / "summary.json").read_text())
    ckpt = demo_dir / summary["models"]["bahdanau"]["checkpoint"]
    png = tmp_path / "c.png"
    r = run_cli("seq2seq", "plot", "connectivity", ckpt, "Sep 27, 1994", "9/27/94", "--out", png)
    assert r.code == 2 and "one TEXT" in r.err and "Traceback" not in r.err
    assert not png.exists()
