"""The character-level language model: corpus, batching, state carrying, bits per char,
sampling, training and the `gatescope charlm` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import central_difference, rel_error

from gatescope import charlm as cl
from gatescope.checkpoint import load_checkpoint, save_checkpoint
from gatescope.cli import main

SNIPPET = '''def add(a, b):
    """Return a + b."""
    return a + b  # the sum


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = [x, (y, {"k": 'v'})]
'''


def write_corpus(folder, n_files=6, repeat=3):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_files):
        (folder / f"mod{k}.py").write_text(SNIPPET.replace("add", f"add{k}") * repeat)
    return folder


def tiny_trainer(folder, steps_cfg=None, **model_kw):
    spec = cl.CorpusSpec(paths=(str(folder),), val_fraction=0.2, seed=0)
    corpus = cl.load_corpus(spec)
    config = cl.CharLMConfig(
        corpus.vocab.size,
        hidden_size=model_kw.pop("hidden_size", 16),
        num_layers=model_kw.pop("num_layers", 2),
        **model_kw,
    )
    train_cfg = steps_cfg or cl.CharTrainConfig(
        batch_size=4, seq_len=16, lr=1e-2, eval_every=10, eval_chars=2000, sample_every=0
    )
    return cl.CharTrainer(cl.CharLM(config, seed=0), corpus, train_cfg)


# ------------------------------------------------------------------------------ vocabulary


def test_vocab_keeps_most_frequent_chars_and_maps_the_rest_to_unknown():
    v = cl.Vocab.build("aaaa bbb cc d", max_size=4)  # room for 3 chars + unknown
    assert v.chars == " ab"  # ' ' (3) a (4) b (3) kept; c (2) and d (1) dropped; sorted
    assert v.size == 4
    assert v.encode("abcd ").tolist() == [2, 3, 0, 0, 1]
    assert v.decode([2, 3, 0, 1]) == "ab" + cl.UNK + " "
    assert cl.Vocab.build("aaaa bbb cc d", min_count=3).chars == " ab"


def test_vocab_encodes_non_ascii_and_rejects_unsorted():
    v = cl.Vocab.build("é中é\n")
    assert v.decode(v.encode("中é\nx")) == "中é\n" + cl.UNK
    with pytest.raises(ValueError, match="sorted"):
        cl.Vocab("ba")


# ------------------------------------------------------------------------------ corpus


def test_corpus_splits_by_file_reproducibly(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for k in range(20):
        (folder / f"f{k:02d}.txt").write_text(f"file {k}\n" * (k + 1))
    (folder / "blob.bin").write_bytes(b"\x00\x01binary")
    spec = cl.CorpusSpec(paths=(str(folder),), val_fraction=0.2, seed=3)
    a, b = cl.load_corpus(spec), cl.load_corpus(spec)
    assert a.val_files == b.val_files and a.train_files == b.train_files
    assert a.fingerprint == b.fingerprint
    assert not set(a.val_files) & set(a.train_files)
    assert len(a.val_files) + len(a.train_files) == 20 and a.skipped_files == 1
    total = a.train_ids.size + a.val_ids.size
    assert a.val_ids.size >= 0.2 * total
    # whole files: the validation text is exactly the validation files, concatenated
    val_text = "".join(open(f).read() for f in a.val_files)
    assert a.vocab.decode(a.val_ids) == val_text
    other = cl.load_corpus(cl.CorpusSpec(paths=(str(folder),), val_fraction=0.2, seed=4))
    assert other.val_files != a.val_files
    # the glob filters folders
    only = cl.load_corpus(cl.CorpusSpec(paths=(str(folder),), glob="f0*.txt", seed=3))
    assert len(only.train_files) + len(only.val_files) == 10


def test_single_file_is_split_at_a_line_boundary(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("".join(f"line {k}\n" for k in range(100)))
    c = cl.load_corpus(cl.CorpusSpec(paths=(str(f),), val_fraction=0.1))
    train, val = c.vocab.decode(c.train_ids), c.vocab.decode(c.val_ids)
    assert train + val == f.read_text()
    assert train.endswith("\n") and val.startswith("line 9")
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15


def test_two_unequal_files_still_leave_one_for_training(tmp_path):
    (tmp_path / "big.py").write_text("x = 1\n" * 500)
    (tmp_path / "small.py").write_text("y = 2\n")
    for seed in range(6):  # whichever file the shuffle puts first
        c = cl.load_corpus(cl.CorpusSpec(paths=(str(tmp_path),), seed=seed))
        assert len(c.train_files) == 1 and len(c.val_files) == 1


def test_default_corpus_is_the_standard_library():
    files = cl._default_files()
    assert all(f.suffix == ".py" for f in files)
    assert any(f.name == "argparse.py" for f in files)
    assert not any("site-packages" in f.parts for f in files)


def test_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        cl.load_corpus(cl.CorpusSpec(paths=(str(tmp_path / "nope"),)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files found"):
        cl.load_corpus(cl.CorpusSpec(paths=(str(tmp_path / "empty"),)))
    with pytest.raises(ValueError, match="val_fraction"):
        cl.CorpusSpec(val_fraction=1.0)


# ------------------------------------------------------------------------------ batching


def test_stream_batcher_layout_is_exact():
    ids = np.arange(23)
    b = cl.StreamBatcher(ids, batch_size=2, seq_len=5)  # S = 11: streams 0..10 and 11..21
    assert b.num_batches == 2
    x0, y0 = b.batch(0)
    x1, y1 = b.batch(1)
    assert x0.tolist() == [[0, 1, 2, 3, 4], [11, 12, 13, 14, 15]]
    assert y0.tolist() == [[1, 2, 3, 4, 5], [12, 13, 14, 15, 16]]
    assert x1.tolist() == [[5, 6, 7, 8, 9], [16, 17, 18, 19, 20]]
    assert y1.tolist() == [[6, 7, 8, 9, 10], [17, 18, 19, 20, 21]]
    with pytest.raises(ValueError, match="batch index"):
        b.batch(2)
    with pytest.raises(ValueError, match="too short"):
        cl.StreamBatcher(np.arange(10), batch_size=2, seq_len=5)


def _snapshot(model):
    copy = cl.CharLM(model.config)
    for k, v in model.params.items():
        copy.params[k][...] = v
    return copy


def _assert_state_equal(a, b):
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_state_is_carried_across_batches_and_reset_each_pass(tmp_path, arch):
    tr = tiny_trainer(write_corpus(tmp_path / "c"), arch=arch)
    tr.batcher = cl.StreamBatcher(tr.corpus.train_ids[: 4 * 49], 4, 16)  # 3 batches a pass
    assert tr.batcher.num_batches == 3
    expected = None
    for step in range(5):
        before = _snapshot(tr.model)  # the weights this step's forward uses
        k = step % 3
        x, _ = tr.batcher.batch(k)
        start = None if k == 0 else expected  # the carried state; zero at each new pass
        _, expected = before.forward(x, start)
        tr.train_step()
        _assert_state_equal(tr.state, expected)


def test_truncated_bptt_gradient_treats_the_incoming_state_as_a_constant():
    model = cl.CharLM(cl.CharLMConfig(5, hidden_size=4, num_layers=2, dtype="float64"), seed=1)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (2, 6)), rng.integers(0, 5, (2, 6))
    state = tuple(rng.normal(size=(2, 2, 4)) for _ in range(2))
    loss, _ = model.loss_and_grad(x, y, state)

    def f():
        logits, _ = model.forward(x, state)
        return -np.mean(
            np.take_along_axis(
                logits - np.log(np.exp(logits).sum(-1, keepdims=True)), y[..., None], -1
            )
        )

    assert math.isclose(loss, f(), rel_tol=1e-12)
    for name in ("rnn.weight_hh_l0", "rnn.weight_ih_l1", "head.weight"):
        analytic = model.grads[name].copy()
        numeric = central_difference(f, model.params[name])
        assert rel_error(analytic, numeric) < 1e-7, name


# ------------------------------------------------------------------------------ bits per char


def _fixed_model(probs):
    """A model whose prediction is always `probs`: all weights 0, head bias log(probs)."""
    model = cl.CharLM(cl.CharLMConfig(len(probs), hidden_size=3, num_layers=2, dtype="float64"))
    for v in model.params.values():
        v[...] = 0
    model.params["head.bias"][...] = np.log(probs)
    return model


@pytest.mark.parametrize("streams", [1, 2, 3, 16])
def test_bits_per_char_against_a_hand_computed_case(streams):
    vocab = cl.Vocab("ab")  # ids: unknown 0, a 1, b 2
    model = _fixed_model([0.2, 0.3, 0.5])  # p(unknown), p(a), p(b), whatever came before
    ids = vocab.encode("abba")  # predicts b, b, a: -log2 of 0.5, 0.5, 0.3
    bpc, n = cl.bits_per_char(model, ids, streams=streams, chunk=2)
    assert n == 3
    assert bpc == pytest.approx((1 + 1 + -math.log2(0.3)) / 3, abs=1e-12)


def test_bits_per_char_one_stream_equals_a_single_forward():
    model = cl.CharLM(cl.CharLMConfig(7, hidden_size=5, num_layers=2, dtype="float64"), seed=2)
    ids = np.random.default_rng(1).integers(0, 7, 50)
    logits, _ = model.forward(ids[None, :-1])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp[0], ids[1:, None], -1).mean() / math.log(2)
    bpc, n = cl.bits_per_char(model, ids, streams=1, chunk=7)  # 7 chunks, state carried
    assert n == 49
    assert bpc == pytest.approx(expected, rel=1e-12)


def test_validation_windows_spread_over_the_text_and_rows_are_streams():
    ids = np.arange(1000)
    w = cl.validation_windows(ids, n_chars=100, streams=4)
    assert w.shape == (4, 26)  # 4 windows of 25 predictions
    assert w[0, 0] == 0 and w[-1, -1] == 999  # from the start to the end
    assert (np.diff(w, axis=1) == 1).all()  # contiguous windows
    assert (w[1:, 1] > w[:-1, -1]).all()  # no predicted char twice
    assert cl.validation_windows(np.arange(5), n_chars=100, streams=32).shape == (4, 2)
    model = cl.CharLM(cl.CharLMConfig(7, hidden_size=5, dtype="float64"), seed=3)
    rows = np.random.default_rng(0).integers(0, 7, (3, 9))
    bpc, n = cl.bits_per_char(model, rows)
    each = [cl.bits_per_char(model, r, streams=1)[0] for r in rows]
    assert n == 24 and bpc == pytest.approx(np.mean(each), rel=1e-12)


# ------------------------------------------------------------------------------ sampling


@pytest.mark.slow
def test_sampling_is_deterministic_given_a_seed():
    vocab = cl.Vocab("abcdefgh")
    model = cl.CharLM(cl.CharLMConfig(vocab.size, hidden_size=8), seed=0)
    a = cl.sample(model, vocab, prime="abc", length=40, temperature=1.0, seed=7)
    b = cl.sample(model, vocab, prime="abc", length=40, temperature=1.0, seed=7)
    c = cl.sample(model, vocab, prime="abc", length=40, temperature=1.0, seed=8)
    assert a == b and len(a) == 40 and a != c
    g1 = cl.sample(model, vocab, prime="abc", length=20, temperature=0, seed=1)
    g2 = cl.sample(model, vocab, prime="abc", length=20, temperature=0, seed=2)
    assert g1 == g2  # temperature 0: always the likeliest char, whatever the seed


def test_sampling_follows_the_model_distribution():
    vocab = cl.Vocab("ab")
    model = _fixed_model([1e-9, 0.25, 0.75])
    text = cl.sample(model, vocab, length=4000, temperature=1.0, seed=0)
    assert abs(text.count("b") / len(text) - 0.75) < 0.03
    assert cl.sample(model, vocab, length=50, temperature=0) == "b" * 50
    with pytest.raises(ValueError, match="temperature"):
        cl.sample(model, vocab, temperature=-1)


# ------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_tiny_training_run_lowers_validation_loss(tmp_path):
    tr = tiny_trainer(write_corpus(tmp_path / "c"))
    before = tr.validate()
    history = cl.fit(tr, max_steps=60, progress=False, log=lambda s: None)
    assert [row["step"] for row in history] == [10, 20, 30, 40, 50, 60]
    assert history[-1]["val_bpc"] < before - 1.0
    assert tr.validate() == history[-1]["val_bpc"]


def test_learning_rate_halves_when_validation_stops_improving(tmp_path):
    tr = tiny_trainer(write_corpus(tmp_path / "c"))
    tr.config = cl.CharTrainConfig(lr=0.01, lr_decay=0.5, min_gain=0.01, min_lr=0.002)
    tr.optimizer.lr = 0.01
    assert not tr.plateau(3.0)  # no history: nothing to compare with
    tr.history = [{"val_bpc": 3.0}, {"val_bpc": 2.5}]
    assert not tr.plateau(2.48) and tr.optimizer.lr == 0.01  # beats the best by > 0.01
    assert tr.plateau(2.495) and tr.optimizer.lr == 0.005  # not by enough
    assert tr.plateau(2.7) and tr.optimizer.lr == 0.0025
    assert tr.plateau(2.7) and tr.optimizer.lr == 0.002  # not below min_lr ...
    assert not tr.plateau(2.7) and tr.optimizer.lr == 0.002  # ... and there it stays
    tr.config = cl.CharTrainConfig(lr_decay=1.0)
    tr.optimizer.lr = 0.01
    assert not tr.plateau(9.0) and tr.optimizer.lr == 0.01  # decay switched off


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    folder = write_corpus(tmp_path / "c")
    ckpt = tmp_path / "m.safetensors"
    straight = tiny_trainer(folder)
    cl.fit(straight, max_steps=12, progress=False, log=lambda s: None)
    first = tiny_trainer(folder)
    cl.fit(first, max_steps=7, checkpoint_path=ckpt, progress=False, log=lambda s: None)
    resumed, meta = cl.CharTrainer.resume(ckpt)
    assert resumed.step == 7 and meta["step"] == 7
    cl.fit(resumed, max_steps=12, progress=False, log=lambda s: None)
    for k, v in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[k], v)
    _assert_state_equal(resumed.state, straight.state)


def test_resume_refuses_a_changed_corpus(tmp_path):
    folder = write_corpus(tmp_path / "c")
    ckpt = tmp_path / "m.safetensors"
    cl.fit(tiny_trainer(folder), max_steps=2, checkpoint_path=ckpt, progress=False, log=print)
    (folder / "mod0.py").write_text("changed\n" * 50)
    with pytest.raises(ValueError, match="corpus has changed"):
        cl.CharTrainer.resume(ckpt)


def test_checkpoint_holds_the_vocabulary_and_loads_for_sampling(tmp_path):
    tr = tiny_trainer(write_corpus(tmp_path / "c"))
    ckpt = tmp_path / "m.safetensors"
    tr.save(ckpt)
    model, vocab, meta = cl.load_charlm(ckpt)
    assert vocab == tr.corpus.vocab and meta["vocab"]["chars"] == vocab.chars
    assert meta["corpus"]["train_chars"] == tr.corpus.train_ids.size
    for k, v in tr.model.params.items():
        np.testing.assert_array_equal(model.params[k], v)
    save_checkpoint(tmp_path / "other.safetensors", {"w": np.zeros(2)}, {"kind": "task"})
    with pytest.raises(ValueError, match="not a character-level language model"):
        cl.load_charlm(tmp_path / "other.safetensors")
    tensors, meta = load_checkpoint(ckpt)
    del tensors["head.bias"]
    save_checkpoint(tmp_path / "broken.safetensors", tensors, meta)
    with pytest.raises(ValueError, match="missing tensor 'head.bias'"):
        cl.load_charlm(tmp_path / "broken.safetensors")


# ------------------------------------------------------------------------------ the command


def run_cli(capsys, *argv):
    """Exit code, stdout, stderr of `gatescope ARGV` (argparse's own errors exit via SystemExit)."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_train_sample_eval(tmp_path, capsys):
    folder = write_corpus(tmp_path / "c")
    ckpt = str(tmp_path / "m.safetensors")
    common = ["--corpus", str(folder), "--hidden", "8", "--batch", "4", "--seq-len", "16"]
    code, out, err = run_cli(
        capsys, "charlm", "train", *common, "--steps", "6", "--eval-every", "3",
        "--eval-chars", "200", "--sample-every", "3", "--no-progress", "--out", ckpt,
    )  # fmt: skip
    assert code == 0, err
    assert "validation" in out and "sample at step 3" in out and "step      6" in out
    code, out, err = run_cli(capsys, "charlm", "train", "--steps", "8", "--resume", "--out", ckpt,
                             "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "resuming" in out and "step 8" in out
    code, out, _ = run_cli(capsys, "charlm", "sample", ckpt, "--prime", "def ", "--length", "30")
    assert code == 0 and out.startswith("def ") and len(out) == len("def ") + 30 + 1
    code, out2, _ = run_cli(capsys, "charlm", "sample", ckpt, "--prime", "def ", "--length", "30")
    assert out2 == out
    code, out, _ = run_cli(capsys, "charlm", "eval", ckpt, "--text", str(folder / "mod1.py"),
                           "--json")  # fmt: skip
    result = json.loads(out)
    assert code == 0 and result["predictions"] == len((folder / "mod1.py").read_text()) - 1
    assert 0 < result["bits_per_char"] < 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hidden", "0"], "--hidden: must be a positive integer"),
        (["--layers", "-1"], "--layers: must be a positive integer"),
        (["--batch", "0"], "--batch: must be a positive integer"),
        (["--seq-len", "0"], "--seq-len: must be a positive integer"),
        (["--steps", "0"], "--steps: must be a positive integer"),
        (["--minutes", "0"], "--minutes: must be a positive number"),
        (["--lr", "-1"], "--lr: must be a positive number"),
        (["--val-fraction", "1"], "--val-fraction: must be a number in (0, 1)"),
        (["--steps", "3", "--minutes", "1"], "not allowed with argument"),
        (["--corpus", "/no/such/corpus"], "corpus path '/no/such/corpus' does not exist"),
        (["--batch", "64", "--seq-len", "64"], "too short for batch_size=64"),
    ],
)
def test_cli_train_errors(tmp_path, capsys, args, message):
    folder = write_corpus(tmp_path / "c", n_files=3, repeat=1)
    argv = ["charlm", "train", "--out", str(tmp_path / "m.st"), "--steps", "1"]
    if "--corpus" not in args:
        argv += ["--corpus", str(folder)]
    if "--steps" in args or "--minutes" in args:
        argv.remove("--steps"), argv.remove("1")
    code, out, err = run_cli(capsys, *argv, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "m.st").exists()


def test_cli_refuses_to_overwrite_or_resume_nothing(tmp_path, capsys):
    folder = write_corpus(tmp_path / "c")
    ckpt = tmp_path / "m.st"
    code, _, err = run_cli(capsys, "charlm", "train", "--resume", "--out", str(ckpt))
    assert code == 2 and "does not exist" in err
    ckpt.write_bytes(b"x")
    code, _, err = run_cli(capsys, "charlm", "train", "--corpus", str(folder), "--out", str(ckpt))
    assert code == 2 and "exists; pass --resume" in err
    code, _, err = run_cli(capsys, "charlm", "train", "--resume", "--out", str(ckpt))
    assert code == 2 and "not a gatescope checkpoint" in err
    code, _, err = run_cli(capsys, "charlm", "sample", str(tmp_path / "none.st"))
    assert code == 2 and "no such file" in err
    code, _, err = run_cli(capsys, "charlm", "sample", str(ckpt), "--length", "0")
    assert code == 2 and "--length: must be a positive integer" in err


def test_cli_resume_refuses_changed_options(tmp_path, capsys):
    folder = write_corpus(tmp_path / "c")
    ckpt = str(tmp_path / "m.st")
    common = ["--corpus", str(folder), "--hidden", "8", "--batch", "4", "--seq-len", "16"]
    assert run_cli(capsys, "charlm", "train", *common, "--steps", "2", "--no-progress",
                   "--out", ckpt)[0] == 0  # fmt: skip
    code, _, err = run_cli(capsys, "charlm", "train", "--resume", "--hidden", "9", "--out", ckpt)
    assert code == 2 and "--hidden 9 differs from the checkpoint's 8" in err
