"""`gatescope seq2seq`: train, exact resume, translate, evaluate, plot, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gatescope.checkpoint import load_checkpoint
from gatescope.cli import main
from gatescope.seq2seq import Seq2Seq

TINY = ["--hidden", "6", "--batch", "8", "--eval-every", "5", "--eval-size", "16"]
REVERSE = ["--task", "reverse", "--length", "6", *TINY]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dates model trained for a few steps (not to accuracy: the commands, not the model)."""
    path = tmp_path_factory.mktemp("s2s") / "dates.safetensors"
    assert (
        main(
            [
                "seq2seq",
                "train",
                "--task",
                "dates",
                *TINY,
                "--steps",
                "10",
                "--out",
                str(path),
                "--quiet",
            ]
        )
        == 0
    )
    return str(path)


def test_train_writes_a_seq2seq_checkpoint(trained):
    tensors, meta = load_checkpoint(trained)
    assert meta["type"] == "gatescope.Seq2Seq" and meta["task"]["name"] == "dates"
    assert meta["model"]["attention"] == "bahdanau" and meta["step"] == 10
    assert "attn.W_q" in tensors and any(k.startswith("optim.") for k in tensors)


def test_resume_is_exact(tmp_path, capsys):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    base = ["seq2seq", "train", *REVERSE, "--quiet", "--checkpoint-every", "0"]
    assert run(capsys, *base, "--steps", "12", "--out", str(full))[0] == 0
    assert run(capsys, *base, "--steps", "6", "--out", str(half))[0] == 0
    code, out, err = run(
        capsys, "seq2seq", "train", "--out", str(half), "--resume", "--steps", "12", "--quiet"
    )
    assert code == 0, err
    a, ma = load_checkpoint(full)
    b, mb = load_checkpoint(half)
    assert ma["step"] == mb["step"] == 12
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    code, _, err = run(capsys, "seq2seq", "train", "--out", str(half), "--resume", "--hidden", "9")
    assert code == 2 and "--hidden" in err


def test_translate_prints_one_output_per_input(trained, capsys):
    code, out, _ = run(capsys, "seq2seq", "translate", trained, "Sep 27, 1994", "9/27/94")
    assert code == 0 and len(out.splitlines()) == 2
    assert all(set(line) <= set("0123456789-") for line in out.splitlines())
    code, out, _ = run(
        capsys, "seq2seq", "translate", trained, "Sep 27, 1994", "1/2/03", "--json", "--beam", "3"
    )
    pairs = json.loads(out)
    assert code == 0 and [p["input"] for p in pairs] == ["Sep 27, 1994", "1/2/03"]
    assert set(pairs[0]) == {"input", "output"}


def test_translate_names_characters_outside_the_vocabulary(trained, capsys):
    code, out, err = run(capsys, "seq2seq", "translate", trained, "Sep 27 ~ 1994#")
    assert code == 2 and "'#~'" in err and "Traceback" not in err and out == ""


def test_evaluate_json(trained, capsys):
    code, out, _ = run(capsys, "seq2seq", "evaluate", trained, "--json", "--n", "20")
    report = json.loads(out)
    assert code == 0
    assert 0 <= report["exact_match"] <= report["token_accuracy"] <= 1
    assert report["n"] == 20 and report["task"]["name"] == "dates"


def test_plot_attention_and_gates(trained, tmp_path, capsys):
    a, g = tmp_path / "a.png", tmp_path / "g.png"
    assert (
        run(capsys, "seq2seq", "plot", "attention", trained, "Sep 27, 1994", "--out", str(a))[0]
        == 0
    )
    assert (
        run(
            capsys,
            "seq2seq",
            "plot",
            "gates",
            trained,
            "Sep 27, 1994",
            "--out",
            str(g),
            "--part",
            "encoder",
        )[0]
        == 0
    )
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and g.stat().st_size > 1000


def test_no_attention_model_has_no_attention_plot(tmp_path, capsys):
    path = tmp_path / "none.safetensors"
    assert (
        run(
            capsys,
            "seq2seq",
            "train",
            *REVERSE,
            "--attention",
            "none",
            "--steps",
            "2",
            "--out",
            str(path),
            "--quiet",
        )[0]
        == 0
    )
    code, _, err = run(
        capsys,
        "seq2seq",
        "plot",
        "attention",
        str(path),
        "abcdef",
        "--out",
        str(tmp_path / "x.png"),
    )
    assert code == 2 and "no attention" in err


def test_errors_exit_2_in_one_line(tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    code, _, err = run(capsys, "seq2seq", "train", "--out", str(out))
    assert code == 2 and "--task" in err
    code, _, err = run(
        capsys, "seq2seq", "train", "--task", "dates", "--attention", "bogus", "--out", str(out)
    )
    assert code == 2 and "bogus" in err
    assert (
        run(capsys, "seq2seq", "train", *REVERSE, "--steps", "1", "--out", str(out), "--quiet")[0]
        == 0
    )
    code, _, err = run(capsys, "seq2seq", "train", *REVERSE, "--steps", "1", "--out", str(out))
    assert code == 2 and "exists" in err
    code, _, err = run(capsys, "seq2seq", "translate", str(tmp_path / "missing.safetensors"), "a")
    assert code == 2 and err.count("\n") == 1


def test_a_trained_file_loads_as_a_seq2seq(trained):
    from gatescope.model import read_model_file

    model, meta, _ = read_model_file(trained)
    assert isinstance(model, Seq2Seq) and meta["step"] == 10


def test_other_commands_refuse_a_seq2seq_file_in_one_line(trained, capsys):
    code, _, err = run(capsys, "evaluate", trained)
    assert code == 2 and "seq2seq" in err and "Traceback" not in err
    code, _, err = run(capsys, "train", "--resume", trained, "--steps", "20")
    assert code == 2 and "seq2seq" in err
