"""Checkpoints written by gatescope 0.1.0 (tests/data/v0.1.0) load, evaluate to what 0.1.0
said, resume, plot and explore on this version's one model stack.

The files are never modified: every test that writes works on a copy in tmp_path.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from gatescope import charlm as cl
from gatescope.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from gatescope.cli import main
from gatescope.model import LEGACY_CHARLM_KIND, MODEL_FILE_TYPE, SequenceModel, load_model
from gatescope.train import fit, resume_state

DATA = Path(__file__).parent / "data" / "v0.1.0"
EXPECTED = json.loads((DATA / "expected.json").read_text())
CORPUS = DATA / "corpus.txt"
TASK_FILES = sorted(n for n in EXPECTED if not n.startswith("charlm_"))
CHARLM_FILES = sorted(n for n in EXPECTED if n.startswith("charlm_"))
# where 0.1.0 recorded the corpus; it exists only on the machine that wrote the files
RECORDED_CORPUS = "/work/main/tests/data/v0.1.0/corpus.txt"


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_fixtures_are_all_there():
    assert len(TASK_FILES) == 6 and len(CHARLM_FILES) == 2
    assert {p.name for p in DATA.glob("*.safetensors")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_file_loads(name):
    tensors, raw = load_checkpoint(DATA / name)
    assert raw["format_version"] == 1 < FORMAT_VERSION
    model, meta = load_model(DATA / name)
    assert isinstance(model, SequenceModel) and meta["type"] == MODEL_FILE_TYPE
    weights = {k: v for k, v in tensors.items() if k.startswith(("rnn.", "head."))}
    assert set(weights) == set(model.params)
    for k, v in weights.items():  # the weights, bit for bit
        np.testing.assert_array_equal(model.params[k], v)
    if name.startswith("charlm_"):
        assert raw["kind"] == LEGACY_CHARLM_KIND
        assert meta["upgraded_from"] == {"kind": LEGACY_CHARLM_KIND, "format_version": 1}
        c = model.config
        assert (c.encoding, c.kind, c.input_size, c.output_size) == (
            "one_hot", "classify_steps", raw["model"]["vocab_size"], raw["model"]["vocab_size"]
        )  # fmt: skip
        assert meta["task"] == {
            "name": "text", "length": raw["train"]["seq_len"],
            "eval_chars": raw["train"]["eval_chars"],
        }  # fmt: skip
        assert [r["val_bpc"] for r in meta["history"]] == [r["metric"] for r in meta["history"]]
    else:
        assert model.config.encoding == "dense" and "encoding" not in raw["model"]


@pytest.mark.parametrize("name", TASK_FILES)
def test_task_models_evaluate_to_what_0_1_0_said(name, capsys):
    code, out, err = run_cli(capsys, "evaluate", DATA / name, "--json", "--n", 200)
    assert code == 0, err
    got, want = json.loads(out)["metrics"], EXPECTED[name]["metrics"]
    assert set(got) == set(want)
    for key, value in want.items():
        if "accuracy" in key:
            assert abs(got[key] - value) <= 1 / 200 + 1e-12, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-5), key


@pytest.mark.parametrize("name", CHARLM_FILES)
def test_char_lms_evaluate_to_what_0_1_0_said(name, capsys):
    code, out, err = run_cli(capsys, "charlm", "eval", DATA / name, "--text", CORPUS, "--json")
    assert code == 0, err
    got, want = json.loads(out), EXPECTED[name]
    assert got["bits_per_char"] == pytest.approx(want["bits_per_char"], rel=1e-5)
    assert got["predictions"] == want["predictions"]
    assert got["unknown_chars"] == want["unknown_chars"]
    summary = {k: got["checkpoint"]["model"][k] for k in want["checkpoint"]["model"]}
    assert (
        summary == want["checkpoint"]["model"]
        and got["checkpoint"]["step"] == want["checkpoint"]["step"]
    )


@pytest.mark.parametrize("name", TASK_FILES)
def test_task_models_resume(name, tmp_path, capsys):
    copy = tmp_path / name
    shutil.copy(DATA / name, copy)
    step = load_model(copy)[1]["step"]
    code, out, err = run_cli(capsys, "train", "--resume", copy, "--steps", step + 3, "--quiet")
    assert code == 0, err
    model, meta = load_model(copy)
    assert meta["step"] == step + 3 and meta["format_version"] == FORMAT_VERSION
    assert meta["model"]["encoding"] == "dense"
    assert (DATA / name).read_bytes() != copy.read_bytes()


def _moved_copy(tmp_path, name):
    """A copy of the checkpoint and of its corpus in tmp_path (as in a fresh clone)."""
    shutil.copy(DATA / name, tmp_path / name)
    shutil.copy(CORPUS, tmp_path / "corpus.txt")
    return tmp_path / name, tmp_path / "corpus.txt"


@pytest.mark.parametrize("name", CHARLM_FILES)
def test_char_lms_resume_with_the_corpus_where_it_is_now(name, tmp_path, capsys):
    copy, corpus = _moved_copy(tmp_path, name)
    step = load_model(copy)[1]["step"]
    code, out, err = run_cli(capsys, "charlm", "train", "--out", copy, "--resume", "--steps",
                             step + 4, "--corpus", corpus, "--no-progress")  # fmt: skip
    assert code == 0, err
    assert f"resuming {copy} at step {step}" in out and f"step {step + 4}" in out
    model, vocab, meta = cl.load_charlm(copy)
    assert meta["step"] == step + 4 and meta["format_version"] == FORMAT_VERSION
    assert meta["corpus"]["paths"] == [str(corpus.resolve())]
    assert {f"carry.{n}" for n in model.recurrent.state_names} <= set(load_checkpoint(copy)[0])
    # the next resume needs no --corpus: the checkpoint now names where the corpus is
    code, _, err = run_cli(capsys, "charlm", "train", "--out", copy, "--resume", "--steps",
                           step + 5, "--no-progress")  # fmt: skip
    assert code == 0, err


def _with_missing_corpus(tmp_path, name):
    """A 0.1.0-layout copy whose recorded corpus path does not exist (a fresh clone)."""
    tensors, meta = load_checkpoint(DATA / name)
    meta["corpus"]["paths"] = [str(tmp_path / "gone" / "corpus.txt")]
    path = tmp_path / f"gone-{name}"
    save_checkpoint(path, tensors, meta)
    return path


@pytest.mark.parametrize("name", CHARLM_FILES)
def test_char_lm_resume_when_the_recorded_corpus_is_gone(name, tmp_path, capsys):
    path = _with_missing_corpus(tmp_path, name)
    code, _, err = run_cli(capsys, "charlm", "train", "--out", path, "--resume", "--steps", 99)
    assert code == 2 and "does not exist" in err and "--corpus PATH" in err
    other = tmp_path / "other.txt"
    other.write_text(CORPUS.read_text().replace("wrap", "WRAP"))
    code, _, err = run_cli(capsys, "charlm", "train", "--out", path, "--resume", "--steps", 99,
                           "--corpus", other)  # fmt: skip
    assert code == 2 and "corpus has changed" in err
    step = load_model(path)[1]["step"]
    code, _, err = run_cli(capsys, "charlm", "train", "--out", path, "--resume", "--steps",
                           step + 1, "--corpus", CORPUS, "--no-progress")  # fmt: skip
    assert code == 0, err


def test_a_0_1_0_char_lm_resumes_bit_exactly(tmp_path):
    """Resuming to 38 in one go equals resuming to 34, saving, and resuming to 38: the
    upgraded Adam state and carried state are the ones training continues with."""
    copy, corpus = _moved_copy(tmp_path, "charlm_lstm2.safetensors")
    results = []
    for stops in ((38,), (34, 38)):
        shutil.copy(DATA / "charlm_lstm2.safetensors", copy)
        for steps in stops:
            task, model, config, state = resume_state(copy, corpus_paths=[corpus], steps=steps)
            fit(task, model, config, checkpoint_path=copy, progress=False, state=state)
        results.append((model, state))
    (a, sa), (b, sb) = results
    assert sa.step == sb.step == 38
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    for k in sa.carry:
        np.testing.assert_array_equal(sa.carry[k], sb.carry[k])
    # and it did train on from the old state: Adam's step counter went on from 30
    assert int(sa.optimizer_state["adam.step"][0]) == 38


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_file_plots_its_gates(name, tmp_path, capsys):
    out = tmp_path / "g.png"
    code, stdout, err = run_cli(capsys, "plot", "gates", DATA / name, "--out", out)
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_char_lm_whose_corpus_is_gone_still_plots(tmp_path, capsys):
    path = _with_missing_corpus(tmp_path, "charlm_gru_f64.safetensors")
    out = tmp_path / "g.png"
    code, _, err = run_cli(capsys, "plot", "gates", path, "--out", out)
    assert code == 0 and "probing with its own sample" in err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["charlm_lstm2.safetensors", "lstm_peephole_order.safetensors"])
def test_files_explore(name, tmp_path, capsys):
    out = tmp_path / "x.html"
    code, stdout, err = run_cli(capsys, "explore", DATA / name, "--out", out,
                                "--grad-positions", 8, "--max-chars", 400)  # fmt: skip
    assert code == 0, err
    assert f"wrote {out}" in stdout and out.read_text().lstrip().lower().startswith("<!doctype")


def test_a_char_lm_whose_corpus_is_gone_explores_its_own_sample(tmp_path, capsys):
    path = _with_missing_corpus(tmp_path, "charlm_lstm2.safetensors")
    out = tmp_path / "x.html"
    code, stdout, err = run_cli(capsys, "explore", path, "--out", out, "--grad-positions", 4,
                                "--max-chars", 300)  # fmt: skip
    assert code == 0, err
    assert "300 steps" in stdout and "own sample" in out.read_text()
    code, stdout, err = run_cli(capsys, "explore", path, "--out", out, "--text", CORPUS,
                                "--grad-positions", 4, "--max-chars", 200)  # fmt: skip
    assert code == 0 and "200 steps" in stdout


def test_the_recorded_corpus_path_is_the_writers():
    """What the tests above stand in for: 0.1.0 recorded an absolute path."""
    for name in CHARLM_FILES:
        _, raw = load_checkpoint(DATA / name)
        assert raw["corpus"]["paths"] == [RECORDED_CORPUS]
        assert math.isclose(raw["corpus"]["val_unknown_fraction"], 0.0)


def test_training_a_char_lm_again_reproduces_what_0_1_0_trained(tmp_path, capsys):
    """The README's command for charlm_gru_f64, run on this stack: the same weights (float64,
    to rounding), the same carried state and the same validation history."""
    out = tmp_path / "again.st"
    code, _, err = run_cli(capsys, "charlm", "train", "--corpus", CORPUS, "--arch", "gru",
                           "--layers", 1, "--hidden", 16, "--steps", 20, "--seq-len", 16,
                           "--batch", 8, "--eval-every", 10, "--eval-chars", 2000,
                           "--sample-every", 0, "--dtype", "float64", "--no-progress",
                           "--out", out)  # fmt: skip
    assert code == 0, err
    old, old_meta = load_model(DATA / "charlm_gru_f64.safetensors")
    new, new_meta = load_model(out)
    for k, v in old.params.items():
        np.testing.assert_allclose(new.params[k], v, rtol=0, atol=1e-10, err_msg=k)
    old_t, new_t = load_checkpoint(DATA / "charlm_gru_f64.safetensors")[0], load_checkpoint(out)[0]
    np.testing.assert_allclose(new_t["carry.h"], old_t["carry.h"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(new_t["optim.adam.v.rnn.weight_hh_l0"],
                               old_t["adam.v.rnn.weight_hh_l0"], rtol=1e-8, atol=1e-20)  # fmt: skip
    for a, b in zip(old_meta["history"], new_meta["history"], strict=True):
        assert a["step"] == b["step"] and a["chars"] == b["chars"]
        assert b["val_bpc"] == pytest.approx(a["val_bpc"], rel=1e-10)
        assert b["train_bpc"] == pytest.approx(a["train_bpc"], rel=1e-10)
    assert new_meta["corpus"]["fingerprint"] == old_meta["corpus"]["fingerprint"]
