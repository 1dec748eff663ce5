"""`gatescope train` and `gatescope evaluate`: results, exact resume, errors, and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gatescope.checkpoint import load_checkpoint
from gatescope.model import load_model
from gatescope.train import resume_state

TINY = ["--hidden", "4", "--batch", "4", "--eval-every", "5", "--eval-size", "8"]
RECALL = ["--task", "recall", "--arch", "lstm", "--length", "4", *TINY]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def assert_one_line_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- train / evaluate


def test_train_then_evaluate_json(tmp_path, run_cli):
    out = tmp_path / "r.safetensors"
    code, stdout, err = run_cli("train", *RECALL, "--steps", "10", "--out", str(out))
    assert code == 0, err
    assert "accuracy" in stdout and "solved: no" in stdout and str(out) in stdout
    assert "step 5: loss" in err and "step 10" in err  # one line per evaluation (not a TTY)
    model, meta = load_model(out)
    assert meta["step"] == 10 and model.config.arch == "lstm" and model.config.dtype == "float32"

    code, stdout, err = run_cli("evaluate", str(out), "--json", "--n", "50")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["metric"] == "accuracy" and 0.0 <= report["accuracy"] <= 1.0
    assert report["accuracy"] == report["metrics"]["accuracy"]
    assert report["baseline"] == pytest.approx(1 / 8)
    assert report["length"] == 4 and report["arch"] == "lstm" and report["task"] == "recall"
    assert report["solved"] is (report["accuracy"] >= 0.99)
    assert report["step"] == 10 and report["n"] == 50
    assert model.config.layer_options["forget_bias"] == 3.0  # the CLI's LSTM default

    code, stdout, _ = run_cli("evaluate", str(out), "--n", "50")
    assert code == 0 and "accuracy" in stdout and "baseline 0.125" in stdout


def test_evaluate_json_for_a_regression_task(tmp_path, run_cli):
    out = tmp_path / "a.safetensors"
    argv = ["--task", "adding", "--arch", "gru", "--length", "6", *TINY, "--steps", "5"]
    assert run_cli("train", *argv, "--quiet", "--out", str(out))[0] == 0
    code, stdout, _ = run_cli("evaluate", str(out), "--json", "--n", "20")
    report = json.loads(stdout)
    assert code == 0 and report["metric"] == "mse" and report["mse"] >= 0
    assert report["baseline"] == pytest.approx(1 / 6) and report["arch"] == "gru"


def test_resume_through_the_cli_is_bit_identical(tmp_path, run_cli):
    common = [*RECALL, "--checkpoint-every", "3", "--quiet"]
    straight, half = tmp_path / "straight", tmp_path / "half"
    assert run_cli("train", *common, "--steps", "12", "--out", str(straight))[0] == 0
    assert run_cli("train", *common, "--steps", "6", "--out", str(half))[0] == 0
    code, stdout, err = run_cli("train", "--resume", str(half), "--steps", "12", "--quiet")
    assert code == 0, err
    a, meta_a = load_checkpoint(straight)
    b, meta_b = load_checkpoint(half)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert meta_b["step"] == 12

    def no_clock(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert no_clock(meta_a["history"]) == no_clock(meta_b["history"])


def test_resume_with_out_and_bare_flag(tmp_path, run_cli):
    out = tmp_path / "r"
    assert run_cli("train", *RECALL, "--steps", "4", "--quiet", "--out", str(out))[0] == 0
    code, _, err = run_cli("train", "--out", str(out), "--resume", "--steps", "6", "--quiet")
    assert code == 0, err
    assert load_model(out)[1]["step"] == 6
    # to another file: the source is left alone
    other = tmp_path / "other"
    code, _, err = run_cli("train", "--resume", str(out), "--out", str(other), "--steps", "8")
    assert code == 0, err
    assert load_model(out)[1]["step"] == 6 and load_model(other)[1]["step"] == 8


def test_nan_stops_with_exit_1_and_keeps_the_last_good_checkpoint(tmp_path, run_cli):
    out = tmp_path / "nan.safetensors"
    argv = ["--task", "adding", "--arch", "lstm", "--length", "6", *TINY, "--steps", "200"]
    argv += ["--optimizer", "sgd", "--lr", "1e12", "--clip-norm", "off", "--checkpoint-every", "1"]
    code, _, err = run_cli("train", *argv, "--quiet", "--out", str(out))
    assert code == 1
    assert "diverged at step" in err and "learning rate" in err and "clipping" in err
    model, meta = load_model(out)
    assert all(np.isfinite(p).all() for p in model.params.values())
    assert f"diverged at step {meta['step'] + 1}" in err


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--task", "sorting", "--arch", "lstm", "--out", "{d}/x"], "sorting"),
        (["train", "--task", "recall", "--arch", "lstm2", "--out", "{d}/x"], "lstm2"),
        (["train", *RECALL, "--hidden", "0", "--out", "{d}/x"], "--hidden"),
        (["train", *RECALL, "--steps", "-5", "--out", "{d}/x"], "--steps"),
        (["train", *RECALL, "--length", "zero", "--out", "{d}/x"], "--length"),
        (["train", *RECALL, "--lr", "nan", "--out", "{d}/x"], "--lr"),
        (["train", *RECALL, "--out", "{d}/missing/x"], "does not exist"),
        (["train", *RECALL, "--out", "{d}"], "is a folder"),
        (["train", *RECALL], "--out"),
        (["train", "--arch", "lstm", "--out", "{d}/x"], "--task"),
        (["train", *RECALL, "--resume", "{d}/nothing", "--out", "{d}/x"], "no such file"),
        (
            [
                "train",
                *RECALL[2:],
                "--task",
                "recall",
                "--arch",
                "gru",
                "--forget-bias",
                "2",
                "--out",
                "{d}/x",
            ],
            "lstm only",
        ),
        (["evaluate", "{d}/nothing"], "no such file"),
        (["evaluate", "{d}/junk"], "junk"),
        (["evaluate", "{d}/junk", "--n", "0"], "--n"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, run_cli, argv, needle):
    (tmp_path / "junk").write_bytes(b"\x00garbage" * 20)
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    code, _, err = run_cli(*argv)
    assert_one_line_error(code, err)
    assert needle in err


def test_existing_out_is_never_overwritten_without_resume_or_force(tmp_path, run_cli):
    out = tmp_path / "r"
    assert run_cli("train", *RECALL, "--steps", "3", "--quiet", "--out", str(out))[0] == 0
    before = out.read_bytes()
    code, _, err = run_cli("train", *RECALL, "--steps", "3", "--out", str(out))
    assert_one_line_error(code, err)
    assert "--resume" in err and "--force" in err and out.read_bytes() == before
    code, _, _ = run_cli("train", *RECALL, "--steps", "3", "--quiet", "--out", str(out), "--force")
    assert code == 0


def test_resume_refuses_flags_that_change_the_run(tmp_path, run_cli):
    out = tmp_path / "r"
    assert run_cli("train", *RECALL, "--steps", "3", "--quiet", "--out", str(out))[0] == 0
    code, _, err = run_cli("train", "--resume", str(out), "--arch", "gru", "--lr", "0.5")
    assert_one_line_error(code, err)
    assert "--arch gru (the checkpoint has lstm)" in err and "--lr 0.5" in err
    code, _, err = run_cli("train", "--resume", str(out), "--steps", "3")
    assert_one_line_error(code, err)
    assert "already at step 3" in err
    # flags equal to the checkpoint's are fine
    code, _, err = run_cli(
        "train", "--resume", str(out), "--arch", "lstm", "--steps", "4", "--quiet"
    )
    assert code == 0, err


def test_errors_have_no_traceback_in_a_real_process(tmp_path, run_cli_process):
    (tmp_path / "junk").write_bytes(b"PK\x03\x04" + bytes(range(256)))
    for argv in (
        ["evaluate", str(tmp_path / "junk")],
        ["train", *RECALL, "--hidden", "-1", "--out", str(tmp_path / "x")],
        ["train", *RECALL, "--out", str(tmp_path / "no" / "x")],
    ):
        res = run_cli_process(*argv)
        assert res.code == 2, res.err
        assert "Traceback" not in res.err
        assert len(res.err.strip().splitlines()) == 1


def test_help_shows_the_defaults(run_cli):
    for command in ("train", "evaluate"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0
        assert "default" in out
    code, out, _ = run_cli("train", "--help")
    assert "(default: 64)" in out and "(default: adam)" in out and "(default: 1.0)" in out


# ----------------------------------------------------------------------------- SIGKILL


def test_sigkill_while_writing_checkpoints_leaves_a_loadable_file(tmp_path):
    # its own Popen: the run is killed mid-way, which run_cli_process (runs to the end) cannot
    out = tmp_path / "run.safetensors"
    cmd = [sys.executable, "-c", "import sys; from gatescope.cli import main; sys.exit(main())"]
    argv = [*RECALL, "--steps", "1000000", "--checkpoint-every", "1", "--quiet", "--out", str(out)]
    proc = subprocess.Popen([*cmd, "train", *argv], env=ENV, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600  # only a guard against hanging, not a speed check
        seen_steps = set()
        while len(seen_steps) < 4:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoints appeared"
            try:
                seen_steps.add(load_model(out)[1]["step"])
            except Exception:  # not there yet: the first write has not landed
                pass
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    model, meta = load_model(out)  # the survivor: a complete checkpoint
    assert meta["step"] >= max(seen_steps)
    task, model, config, state = resume_state(out, steps=meta["step"] + 2)
    assert state.step == meta["step"]
    leftovers = [p.name for p in Path(tmp_path).iterdir() if p.name != out.name]
    assert all(name.startswith(".run.safetensors.") for name in leftovers)  # at most a stale tmp
