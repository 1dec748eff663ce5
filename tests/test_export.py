"""`gatescope export`: a trained model to ONNX (runs in onnxruntime with the same numbers)
and Keras, and a model from elsewhere to a gatescope checkpoint that `plot` reads."""

from __future__ import annotations

import numpy as np
import pytest

import gatescope as gs
from gatescope import cli
from gatescope.model import load_model, save_model
from gatescope.tasks import get_task

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def checkpoint(tmp_path):
    task = get_task("recall", 12)
    model = gs.SequenceModel.for_task(task, "lstm", hidden_size=6, num_layers=2, seed=3)
    path = tmp_path / "run.safetensors"
    save_model(path, model, meta={"task": task.to_dict(), "step": 7})
    return path, model


def test_export_onnx_runs_in_onnxruntime(tmp_path, checkpoint, capsys):
    path, model = checkpoint
    out = tmp_path / "run.onnx"
    assert cli.main(["export", str(path), "--onnx", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "onnxruntime: max |difference|" in printed
    onnx.checker.check_model(onnx.load(out), full_check=True)
    x = get_task("recall", 12).make_batch(5, np.random.default_rng(0)).x
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.astype(np.float32)})
    np.testing.assert_allclose(got, model(x), rtol=0, atol=1e-5)


def test_an_onnx_model_becomes_a_checkpoint_that_plot_reads(tmp_path, checkpoint):
    path, model = checkpoint
    graph = tmp_path / "m.onnx"
    gs.to_onnx(model, graph, dtype="float64")  # keeps every bit
    back = tmp_path / "back.safetensors"
    argv = ["export", str(graph), "--checkpoint", str(back), "--task", "recall", "--length", "12"]
    assert cli.main(argv) == 0
    loaded, meta = load_model(back)
    assert meta["source"] == "onnx" and meta["task"]["name"] == "recall"
    for name, p in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], p)
    png = tmp_path / "gates.png"
    assert cli.main(["plot", "gates", str(back), "--out", str(png), "--batch", "4"]) == 0
    assert png.stat().st_size > 1000


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "nothing to write"),
        (["--onnx", "x.txt"], "--onnx must name a .onnx file"),
        (["--keras", "x.h5"], "--keras must name a .keras file"),
        (["--onnx", "a.onnx", "--task", "recall"], "--task and --length go with --checkpoint"),
        (["--checkpoint", "a.safetensors", "--task", "adding"], "the task's input size is 2"),
        (["--onnx", "a.onnx", "--dtype", "float64", "--check"], "onnxruntime cannot run"),
    ],
)
def test_bad_requests_are_one_line_errors(tmp_path, checkpoint, capsys, monkeypatch, argv, message):
    path, _ = checkpoint
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", str(path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_model_file_is_an_error(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nope.onnx"), "--onnx", "o.onnx"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_missing_extra_is_a_one_line_error_naming_it(tmp_path, checkpoint, capsys, monkeypatch):
    import importlib

    from gatescope.interop import _extras

    real = importlib.import_module

    def without_onnx(name, *args):
        if name.split(".")[0] == "onnx":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(_extras.importlib, "import_module", without_onnx)
    path, _ = checkpoint
    assert cli.main(["export", str(path), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "to_onnx needs onnx: pip install 'gatescope[onnx]'" in err and "Traceback" not in err


# ------------------------------------------------------------ foreign files, straight to the CLI


@pytest.fixture
def recall8(tmp_path):
    task = get_task("recall", 8)
    return gs.SequenceModel.for_task(task, "gru", hidden_size=5, seed=4)


def test_plot_reads_an_onnx_file_with_task(tmp_path, recall8, capsys):
    graph = tmp_path / "model.onnx"
    gs.to_onnx(recall8, graph, dtype="float64")
    png = tmp_path / "x.png"
    argv = ["plot", "gates", str(graph), "--task", "recall", "--length", "8", "--out", str(png)]
    assert cli.main([*argv, "--batch", "4"]) == 0
    assert png.stat().st_size > 1000 and str(png) in capsys.readouterr().out
    # without --task there is nothing to run it on: a one-line error that says what to pass
    assert cli.main(["plot", "gates", str(graph), "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert "pass --task NAME" in err and len(err.strip().splitlines()) == 1
    # a task that does not fit the model is refused by name
    assert cli.main(["plot", "gates", str(graph), "--task", "adding", "--out", str(png)]) == 2
    assert "the task's input size is 2" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_explore_reads_a_keras_file_with_task(tmp_path, recall8, capsys):
    pytest.importorskip("torch")
    from gatescope.interop._extras import require_keras

    try:
        require_keras("this test")
    except ImportError:
        pytest.skip("keras is not installed")
    path = tmp_path / "model.keras"
    gs.to_keras(recall8).save(path)
    html = tmp_path / "e.html"
    argv = ["explore", str(path), "--task", "recall", "--length", "8", "-o", str(html)]
    assert cli.main([*argv, "--task-samples", "2", "--grad-positions", "4"]) == 0
    text = html.read_text(encoding="utf-8")
    assert text.startswith("<!") and "model.keras" in text
    assert cli.main(["explore", str(path), "-o", str(html)]) == 2
    assert "pass --task NAME" in capsys.readouterr().err


def test_plot_turns_a_missing_extra_into_a_one_line_error(tmp_path, recall8, capsys, monkeypatch):
    import importlib

    from gatescope.interop import _extras

    graph = tmp_path / "model.onnx"
    gs.to_onnx(recall8, graph)
    real = importlib.import_module

    def without_onnx(name, *args):
        if name.split(".")[0] == "onnx":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(_extras.importlib, "import_module", without_onnx)
    for argv in (["plot", "gates", str(graph)], ["explore", str(graph)]):
        assert cli.main([*argv, "--task", "recall", "--length", "8"]) == 2
        err = capsys.readouterr().err
        assert "pip install 'gatescope[onnx]'" in err and "Traceback" not in err
