"""The character-level language model on the one stack: corpus, batching, state carrying,
bits per char, sampling, training (train.fit with carry_state) and `gatescope charlm`."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import central_difference, rel_error

from gatescope import charlm as cl
from gatescope import train
from gatescope.checkpoint import load_checkpoint, save_checkpoint
from gatescope.model import SequenceModel, load_model
from gatescope.tasks import text as tx
from gatescope.train import TrainConfig, TrainState, fit, resume_state

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


def tiny_run(folder, arch="lstm", hidden_size=16, num_layers=2, **train_kw):
    """(task, model, config) of a small char-LM run on `folder`."""
    corpus = tx.load_corpus(tx.CorpusSpec(paths=(str(folder),), val_fraction=0.2, seed=0))
    task = tx.TextTask(corpus, seq_len=16, eval_chars=2000)
    model = cl.new_model(corpus.vocab.size, arch, hidden_size, num_layers, seed=0)
    kw = dict(
        steps=None, batch_size=4, lr=1e-2, clip_norm=5.0, eval_every=10, checkpoint_every=10,
        early_stop=False, carry_state=True, lr_decay=0.5,
    )  # fmt: skip
    kw.update(train_kw)
    return task, model, TrainConfig(**kw)


def quiet_fit(task, model, config, steps, **kw):
    return fit(task, model, TrainConfig(**{**config.to_dict(), "steps": steps}),
               progress=False, log=lambda s: None, **kw)  # fmt: skip


# ------------------------------------------------------------------------------ vocabulary


def test_vocab_keeps_most_frequent_chars_and_maps_the_rest_to_unknown():
    v = tx.Vocab.build("aaaa bbb cc d", max_size=4)  # room for 3 chars + unknown
    assert v.chars == " ab"  # ' ' (3) a (4) b (3) kept; c (2) and d (1) dropped; sorted
    assert v.size == 4
    assert v.encode("abcd ").tolist() == [2, 3, 0, 0, 1]
    assert v.decode([2, 3, 0, 1]) == "ab" + tx.UNK + " "
    assert tx.Vocab.build("aaaa bbb cc d", min_count=3).chars == " ab"


def test_vocab_encodes_non_ascii_and_rejects_unsorted():
    v = tx.Vocab.build("é中é\n")
    assert v.decode(v.encode("中é\nx")) == "中é\n" + tx.UNK
    with pytest.raises(ValueError, match="sorted"):
        tx.Vocab("ba")


# ------------------------------------------------------------------------------ corpus


def test_corpus_splits_by_file_reproducibly(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for k in range(20):
        (folder / f"f{k:02d}.txt").write_text(f"file {k}\n" * (k + 1))
    (folder / "blob.bin").write_bytes(b"\x00\x01binary")
    spec = tx.CorpusSpec(paths=(str(folder),), val_fraction=0.2, seed=3)
    a, b = tx.load_corpus(spec), tx.load_corpus(spec)
    assert a.val_files == b.val_files and a.train_files == b.train_files
    assert a.fingerprint == b.fingerprint
    assert not set(a.val_files) & set(a.train_files)
    assert len(a.val_files) + len(a.train_files) == 20 and a.skipped_files == 1
    total = a.train_ids.size + a.val_ids.size
    assert a.val_ids.size >= 0.2 * total
    # whole files: the validation text is exactly the validation files, concatenated
    val_text = "".join(open(f).read() for f in a.val_files)
    assert a.vocab.decode(a.val_ids) == val_text
    other = tx.load_corpus(tx.CorpusSpec(paths=(str(folder),), val_fraction=0.2, seed=4))
    assert other.val_files != a.val_files
    # the glob filters folders
    only = tx.load_corpus(tx.CorpusSpec(paths=(str(folder),), glob="f0*.txt", seed=3))
    assert len(only.train_files) + len(only.val_files) == 10


def test_single_file_is_split_at_a_line_boundary(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("".join(f"line {k}\n" for k in range(100)))
    c = tx.load_corpus(tx.CorpusSpec(paths=(str(f),), val_fraction=0.1))
    train, val = c.vocab.decode(c.train_ids), c.vocab.decode(c.val_ids)
    assert train + val == f.read_text()
    assert train.endswith("\n") and val.startswith("line 9")
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15


def test_two_unequal_files_still_leave_one_for_training(tmp_path):
    (tmp_path / "big.py").write_text("x = 1\n" * 500)
    (tmp_path / "small.py").write_text("y = 2\n")
    for seed in range(6):  # whichever file the shuffle puts first
        c = tx.load_corpus(tx.CorpusSpec(paths=(str(tmp_path),), seed=seed))
        assert len(c.train_files) == 1 and len(c.val_files) == 1


def test_default_corpus_is_the_standard_library():
    files = tx._default_files()
    assert all(f.suffix == ".py" for f in files)
    assert any(f.name == "argparse.py" for f in files)
    assert not any("site-packages" in f.parts for f in files)


def test_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        tx.load_corpus(tx.CorpusSpec(paths=(str(tmp_path / "nope"),)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files found"):
        tx.load_corpus(tx.CorpusSpec(paths=(str(tmp_path / "empty"),)))
    with pytest.raises(ValueError, match="val_fraction"):
        tx.CorpusSpec(val_fraction=1.0)


# ------------------------------------------------------------------------------ batching


def test_stream_batcher_layout_is_exact():
    ids = np.arange(23)
    b = tx.StreamBatcher(ids, batch_size=2, seq_len=5)  # S = 11: streams 0..10 and 11..21
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
        tx.StreamBatcher(np.arange(10), batch_size=2, seq_len=5)


def _snapshot(model):
    copy = SequenceModel(model.config)
    copy.load_params(model.params)
    return copy


def _assert_state_equal(a, b):
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_state_is_carried_across_batches_and_reset_each_pass(tmp_path, arch):
    task, model, config = tiny_run(write_corpus(tmp_path / "c"), arch=arch)
    corpus = task.corpus
    corpus.train_ids = corpus.train_ids[: 4 * 49]  # 3 batches a pass
    task = tx.TextTask(corpus, seq_len=16, eval_chars=2000)
    assert task.steps_per_pass(4) == 3
    state, expected = TrainState(), None
    for step in range(5):
        before = _snapshot(model)  # the weights this step's forward uses
        k = step % 3
        assert task.pass_starts(step, 4) == (k == 0)
        x = task.batch_at(step, 4).x
        np.testing.assert_array_equal(x, task.batcher(4).batch(k)[0])
        start = None if k == 0 else expected  # the carried state; zero at each new pass
        before.forward(x, start)
        expected = before.final_state
        quiet_fit(task, model, config, step + 1, state=state)
        _assert_state_equal(model.state_from_arrays(state.carry), expected)


def test_without_carry_state_every_batch_starts_from_zero(tmp_path):
    folder = write_corpus(tmp_path / "c")
    runs = {}
    for carry in (False, True):
        task, model, config = tiny_run(folder, carry_state=carry)
        state = TrainState()
        quiet_fit(task, model, config, 1, state=state)
        one = {k: v.copy() for k, v in model.params.items()}
        quiet_fit(task, model, config, 2, state=state)
        runs[carry] = (one, model, state)
    # step 1 starts from zero either way; step 2 from zero only without carry_state
    for k in runs[True][0]:
        np.testing.assert_array_equal(runs[False][0][k], runs[True][0][k])
    assert any(
        not np.array_equal(runs[False][1].params[k], runs[True][1].params[k]) for k in runs[True][0]
    )
    assert runs[False][2].carry is None and runs[True][2].carry is not None
    # and step 2 without carry_state is one update from the zero state: replay it
    task, model, config = tiny_run(folder, carry_state=False)
    model.load_params(runs[False][0])
    opt = config.make_optimizer(model.params)
    state = runs[False][2]
    from gatescope.train import train_step

    replay_state = TrainState()
    quiet_fit(task, cl.new_model(task.corpus.vocab.size, hidden_size=16, seed=0), config, 1,
              state=replay_state)  # fmt: skip
    opt.load_state_dict(replay_state.optimizer_state)
    train_step(model, opt, task.batch_at(1, 4), config, None)
    for k, v in runs[False][1].params.items():
        np.testing.assert_array_equal(model.params[k], v)
    assert state.step == 2
    with pytest.raises(ValueError, match="carry_state needs a sequential task"):
        from gatescope.tasks import get_task

        recall = get_task("recall", 5)
        fit(
            recall,
            SequenceModel.for_task(recall, "lstm", 4),
            TrainConfig(steps=1, carry_state=True),
        )


def test_truncated_bptt_gradient_treats_the_incoming_state_as_a_constant():
    model = cl.new_model(5, hidden_size=4, num_layers=2, dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (2, 6)), rng.integers(0, 5, (2, 6))
    state = tuple(rng.normal(size=(2, 2, 4)) for _ in range(2))
    from gatescope.tasks import Batch

    batch = Batch(x=x, y=y)
    loss, dout = model.loss(model.forward(x, state), batch)
    model.backward(dout)

    def f():
        logits = model.forward(x, state)
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
    model = cl.new_model(len(probs), hidden_size=3, num_layers=2, dtype="float64")
    for v in model.params.values():
        v[...] = 0
    model.params["head.bias"][...] = np.log(probs)
    return model


@pytest.mark.parametrize("streams", [1, 2, 3, 16])
def test_bits_per_char_against_a_hand_computed_case(streams):
    vocab = tx.Vocab("ab")  # ids: unknown 0, a 1, b 2
    model = _fixed_model([0.2, 0.3, 0.5])  # p(unknown), p(a), p(b), whatever came before
    ids = vocab.encode("abba")  # predicts b, b, a: -log2 of 0.5, 0.5, 0.3
    bpc, n = cl.bits_per_char(model, ids, streams=streams, chunk=2)
    assert n == 3
    assert bpc == pytest.approx((1 + 1 + -math.log2(0.3)) / 3, abs=1e-12)


def test_bits_per_char_one_stream_equals_a_single_forward():
    model = cl.new_model(7, hidden_size=5, num_layers=2, dtype="float64", seed=2)
    ids = np.random.default_rng(1).integers(0, 7, 50)
    logits = model.forward(ids[None, :-1])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp[0], ids[1:, None], -1).mean() / math.log(2)
    bpc, n = cl.bits_per_char(model, ids, streams=1, chunk=7)  # 7 chunks, state carried
    assert n == 49
    assert bpc == pytest.approx(expected, rel=1e-12)


def test_validation_windows_spread_over_the_text_and_rows_are_streams():
    ids = np.arange(1000)
    w = tx.validation_windows(ids, n_chars=100, streams=4)
    assert w.shape == (4, 26)  # 4 windows of 25 predictions
    assert w[0, 0] == 0 and w[-1, -1] == 999  # from the start to the end
    assert (np.diff(w, axis=1) == 1).all()  # contiguous windows
    assert (w[1:, 1] > w[:-1, -1]).all()  # no predicted char twice
    assert tx.validation_windows(np.arange(5), n_chars=100, streams=32).shape == (4, 2)
    model = cl.new_model(7, hidden_size=5, dtype="float64", seed=3)
    rows = np.random.default_rng(0).integers(0, 7, (3, 9))
    bpc, n = cl.bits_per_char(model, rows)
    each = [cl.bits_per_char(model, r, streams=1)[0] for r in rows]
    assert n == 24 and bpc == pytest.approx(np.mean(each), rel=1e-12)


# ------------------------------------------------------------------------------ sampling


@pytest.mark.slow
def test_sampling_is_deterministic_given_a_seed():
    vocab = tx.Vocab("abcdefgh")
    model = cl.new_model(vocab.size, hidden_size=8, seed=0)
    a = cl.sample(model, vocab, prime="abc", length=40, temperature=1.0, seed=7)
    b = cl.sample(model, vocab, prime="abc", length=40, temperature=1.0, seed=7)
    c = cl.sample(model, vocab, prime="abc", length=40, temperature=1.0, seed=8)
    assert a == b and len(a) == 40 and a != c
    g1 = cl.sample(model, vocab, prime="abc", length=20, temperature=0, seed=1)
    g2 = cl.sample(model, vocab, prime="abc", length=20, temperature=0, seed=2)
    assert g1 == g2  # temperature 0: always the likeliest char, whatever the seed


def test_sampling_follows_the_model_distribution():
    vocab = tx.Vocab("ab")
    model = _fixed_model([1e-9, 0.25, 0.75])
    text = cl.sample(model, vocab, length=4000, temperature=1.0, seed=0)
    assert abs(text.count("b") / len(text) - 0.75) < 0.03
    assert cl.sample(model, vocab, length=50, temperature=0) == "b" * 50
    with pytest.raises(ValueError, match="temperature"):
        cl.sample(model, vocab, temperature=-1)


# ------------------------------------------------------------------------------ training


def _val(task, model):
    return train.evaluate_model(task, model)["bits_per_char"]


def test_the_text_metric_is_bits_per_char_on_the_validation_windows(tmp_path):
    task, model, _ = tiny_run(write_corpus(tmp_path / "c"))
    windows = task.validation_ids()
    np.testing.assert_array_equal(windows, tx.validation_windows(task.corpus.val_ids, 2000))
    assert _val(task, model) == cl.bits_per_char(model, windows)[0]
    assert task.metric_name == "bits_per_char" and not task.higher_is_better
    assert task.baseline == pytest.approx(math.log2(task.corpus.vocab.size))
    # the Task interface: random probe windows, scored in bits per char
    batch = task.make_batch(3, 0)
    assert batch.x.shape == (3, 16) and (batch.y[:, :-1] == batch.x[:, 1:]).all()
    out = model.forward(batch.x)
    got = task.evaluate(out, batch)
    assert got["bits_per_char"] == pytest.approx(got["cross_entropy"] / math.log(2))


@pytest.mark.slow
def test_tiny_training_run_lowers_validation_loss(tmp_path):
    task, model, config = tiny_run(write_corpus(tmp_path / "c"))
    before = _val(task, model)
    result = quiet_fit(task, model, config, 60)
    history = result.history
    assert [row["step"] for row in history] == [10, 20, 30, 40, 50, 60]
    assert history[-1]["val_bpc"] < before - 1.0
    assert history[-1]["bits_per_char"] == history[-1]["val_bpc"] == history[-1]["metric"]
    assert all(row["chars"] == row["step"] * 4 * 16 for row in history)
    assert _val(task, model) == history[-1]["val_bpc"] == result.metrics["bits_per_char"]


def test_an_embedding_char_lm_trains_and_resumes(tmp_path):
    task, _, config = tiny_run(write_corpus(tmp_path / "c"))
    V = task.corpus.vocab.size
    model = cl.new_model(V, hidden_size=8, num_layers=1, encoding="embedding", embed_size=5)
    assert model.params["embed.weight"].shape == (V, 5)
    before = _val(task, model)
    ckpt = tmp_path / "e.st"
    quiet_fit(task, model, config, 20, checkpoint_path=ckpt)
    assert _val(task, model) < before
    again, vocab, meta = cl.load_charlm(ckpt)
    assert meta["model"]["encoding"] == "embedding" and vocab == task.corpus.vocab
    np.testing.assert_array_equal(again.params["embed.weight"], model.params["embed.weight"])


def test_learning_rate_decays_when_validation_stops_improving(tmp_path):
    task, model, _ = tiny_run(write_corpus(tmp_path / "c"))
    config = TrainConfig(steps=1, lr=0.01, lr_decay=0.5, min_gain=0.01, min_lr=0.002)
    opt = config.make_optimizer(model.params)
    state = TrainState()

    def plateau(value):
        return train._plateau(task, config, opt, state, value)

    assert not plateau(3.0)  # no history: nothing to compare with
    state.history = [{"metric": 3.0}, {"metric": 2.5}]
    assert not plateau(2.48) and opt.lr == 0.01  # beats the best by > 0.01
    assert plateau(2.495) and opt.lr == 0.005  # not by enough
    assert plateau(2.7) and opt.lr == 0.0025
    assert plateau(2.7) and opt.lr == 0.002  # not below min_lr ...
    assert not plateau(2.7) and opt.lr == 0.002  # ... and there it stays
    config = TrainConfig(steps=1, lr_decay=1.0)
    opt.lr = 0.01
    assert not train._plateau(task, config, opt, state, 9.0) and opt.lr == 0.01  # off
    # higher-is-better metrics (task accuracies) decay when they do not rise
    from gatescope.tasks import get_task

    config = TrainConfig(steps=1, lr=0.01, lr_decay=0.5)
    state.history = [{"metric": 0.5}]
    assert train._plateau(get_task("recall", 5), config, opt, state, 0.4) and opt.lr == 0.005
    assert not train._plateau(get_task("recall", 5), config, opt, state, 0.6)


def test_the_lr_schedule_of_a_run_is_in_its_history(tmp_path):
    task, model, config = tiny_run(write_corpus(tmp_path / "c"), lr=0.05, min_gain=10.0)
    history = quiet_fit(task, model, config, 30).history  # min_gain 10: never "better"
    assert [row["lr"] for row in history] == [0.05, 0.025, 0.0125]


def test_a_time_budget_without_a_step_limit(tmp_path):
    task, model, config = tiny_run(write_corpus(tmp_path / "c"), eval_every=1000)
    assert config.steps is None
    with pytest.raises(ValueError, match="give a time_limit"):
        fit(task, model, config, progress=False)
    result = fit(task, model, config, progress=False, time_limit=1e-6)
    assert result.stop_reason == "time" and result.steps == 1


def test_samples_every_n_steps_go_to_the_log(tmp_path):
    task, model, config = tiny_run(write_corpus(tmp_path / "c"), sample_every=2, sample_chars=7)
    lines = []
    fit(task, model, TrainConfig(**{**config.to_dict(), "steps": 4}), progress=False,
        log=lines.append)  # fmt: skip
    samples = [line for line in lines if line.startswith("--- sample")]
    assert [s.splitlines()[0] for s in samples] == [
        "--- sample at step 2 (temperature 0.8) ---",
        "--- sample at step 4 (temperature 0.8) ---",
    ]
    assert all(len(s.splitlines()[1]) <= 7 for s in samples)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    folder = write_corpus(tmp_path / "c")
    ckpt = tmp_path / "m.safetensors"
    task, straight, config = tiny_run(folder)
    s_state = TrainState()
    quiet_fit(task, straight, config, 12, state=s_state)
    task, first, config = tiny_run(folder)
    quiet_fit(task, first, config, 7, checkpoint_path=ckpt)
    task2, resumed, config2, state = resume_state(ckpt, steps=12)
    assert state.step == 7 and state.carry is not None and config2.carry_state
    quiet_fit(task2, resumed, config2, 12, state=state)
    for k, v in straight.params.items():
        np.testing.assert_array_equal(resumed.params[k], v)
    for k, v in s_state.carry.items():
        np.testing.assert_array_equal(state.carry[k], v)
    assert [r["val_bpc"] for r in state.history] == [r["val_bpc"] for r in s_state.history]
    assert [r["train_bpc"] for r in state.history] == [r["train_bpc"] for r in s_state.history]


def test_resume_refuses_a_changed_corpus(tmp_path):
    folder = write_corpus(tmp_path / "c")
    ckpt = tmp_path / "m.safetensors"
    quiet_fit(*tiny_run(folder), 2, checkpoint_path=ckpt)
    (folder / "mod0.py").write_text("changed\n" * 50)
    with pytest.raises(ValueError, match="corpus has changed"):
        resume_state(ckpt)


def test_resume_reads_a_moved_corpus_with_the_same_text(tmp_path):
    folder = write_corpus(tmp_path / "c")
    ckpt = tmp_path / "m.safetensors"
    quiet_fit(*tiny_run(folder), 2, checkpoint_path=ckpt)
    moved = tmp_path / "elsewhere"
    shutil.move(folder, moved)
    with pytest.raises(ValueError, match="does not exist"):
        resume_state(ckpt)
    task, _, _, state = resume_state(ckpt, corpus_paths=[moved])
    assert state.step == 2 and task.corpus.spec.paths == (str(moved.resolve()),)
    (moved / "mod1.py").write_text("other text\n")
    with pytest.raises(ValueError, match="corpus has changed"):
        resume_state(ckpt, corpus_paths=[moved])


def test_checkpoint_holds_the_vocabulary_and_loads_for_sampling(tmp_path):
    task, model, config = tiny_run(write_corpus(tmp_path / "c"))
    ckpt = tmp_path / "m.safetensors"
    quiet_fit(task, model, config, 3, checkpoint_path=ckpt)
    again, vocab, meta = cl.load_charlm(ckpt)
    assert vocab == task.corpus.vocab and meta["vocab"]["chars"] == vocab.chars
    assert meta["corpus"]["train_chars"] == task.corpus.train_ids.size
    assert meta["type"] == "gatescope.SequenceModel" and meta["task"]["name"] == "text"
    assert meta["format_version"] == 2 and meta["model"]["encoding"] == "one_hot"
    for k, v in model.params.items():
        np.testing.assert_array_equal(again.params[k], v)
    assert cl.sample(again, vocab, length=20, seed=1) == cl.sample(model, vocab, length=20, seed=1)
    save_checkpoint(tmp_path / "other.safetensors", {"w": np.zeros(2)}, {"kind": "task"})
    with pytest.raises(ValueError, match="not a gatescope sequence-model"):
        cl.load_charlm(tmp_path / "other.safetensors")
    from gatescope.tasks import get_task

    recall = get_task("recall", 5)
    train.fit(recall, SequenceModel.for_task(recall, "gru", 4), TrainConfig(steps=1),
              checkpoint_path=tmp_path / "task.st", progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="not a character-level language model"):
        cl.load_charlm(tmp_path / "task.st")
    tensors, meta = load_checkpoint(ckpt)
    del tensors["head.bias"]
    save_checkpoint(tmp_path / "broken.safetensors", tensors, meta)
    with pytest.raises(ValueError, match="missing tensor 'head.bias'"):
        cl.load_charlm(tmp_path / "broken.safetensors")
    assert load_model(ckpt)[1]["step"] == 3


# ------------------------------------------------------------------------------ the command


def test_cli_train_sample_eval(tmp_path, run_cli):
    folder = write_corpus(tmp_path / "c")
    ckpt = str(tmp_path / "m.safetensors")
    common = ["--corpus", str(folder), "--hidden", "8", "--batch", "4", "--seq-len", "16"]
    code, out, err = run_cli(
        "charlm", "train", *common, "--steps", "6", "--eval-every", "3",
        "--eval-chars", "200", "--sample-every", "3", "--no-progress", "--out", ckpt,
    )  # fmt: skip
    assert code == 0, err
    assert "validation" in out and "sample at step 3" in out and "step      6" in out
    code, out, err = run_cli("charlm", "train", "--steps", "8", "--resume", "--out", ckpt,
                             "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "resuming" in out and "step 8" in out
    assert "step      8  train" in out  # the last step is evaluated, off the schedule too
    assert "checkpoint written" not in out  # as 0.1.0 printed: the evaluation lines only
    code, out, _ = run_cli("charlm", "sample", ckpt, "--prime", "def ", "--length", "30")
    assert code == 0 and out.startswith("def ") and len(out) == len("def ") + 30 + 1
    code, out2, _ = run_cli("charlm", "sample", ckpt, "--prime", "def ", "--length", "30")
    assert out2 == out
    code, out, _ = run_cli("charlm", "eval", ckpt, "--text", str(folder / "mod1.py"),
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
def test_cli_train_errors(tmp_path, run_cli, args, message):
    folder = write_corpus(tmp_path / "c", n_files=3, repeat=1)
    argv = ["charlm", "train", "--out", str(tmp_path / "m.st"), "--steps", "1"]
    if "--corpus" not in args:
        argv += ["--corpus", str(folder)]
    if "--steps" in args or "--minutes" in args:
        argv.remove("--steps"), argv.remove("1")
    code, out, err = run_cli(*argv, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "m.st").exists()


def test_cli_refuses_to_overwrite_or_resume_nothing(tmp_path, run_cli):
    folder = write_corpus(tmp_path / "c")
    ckpt = tmp_path / "m.st"
    code, _, err = run_cli("charlm", "train", "--resume", "--out", str(ckpt))
    assert code == 2 and "does not exist" in err
    ckpt.write_bytes(b"x")
    code, _, err = run_cli("charlm", "train", "--corpus", str(folder), "--out", str(ckpt))
    assert code == 2 and "exists; pass --resume" in err
    code, _, err = run_cli("charlm", "train", "--resume", "--out", str(ckpt))
    assert code == 2 and "not a gatescope checkpoint" in err
    code, _, err = run_cli("charlm", "sample", str(tmp_path / "none.st"))
    assert code == 2 and "no such file" in err
    code, _, err = run_cli("charlm", "sample", str(ckpt), "--length", "0")
    assert code == 2 and "--length: must be a positive integer" in err


def test_cli_resume_refuses_changed_options(tmp_path, run_cli):
    folder = write_corpus(tmp_path / "c")
    ckpt = str(tmp_path / "m.st")
    common = ["--corpus", str(folder), "--hidden", "8", "--batch", "4", "--seq-len", "16"]
    assert run_cli("charlm", "train", *common, "--steps", "2", "--no-progress",
                   "--out", ckpt)[0] == 0  # fmt: skip
    code, _, err = run_cli("charlm", "train", "--resume", "--hidden", "9", "--out", ckpt)
    assert code == 2 and "--hidden 9 differs from the checkpoint's 8" in err


def test_cli_resume_with_a_moved_corpus(tmp_path, run_cli):
    folder = write_corpus(tmp_path / "c")
    ckpt = str(tmp_path / "m.st")
    common = ["--corpus", str(folder), "--hidden", "8", "--batch", "4", "--seq-len", "16"]
    assert run_cli("charlm", "train", *common, "--steps", "2", "--no-progress",
                   "--out", ckpt)[0] == 0  # fmt: skip
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    code, _, err = run_cli("charlm", "train", "--resume", "--steps", "3", "--out", ckpt)
    assert code == 2 and "does not exist" in err and "--corpus PATH" in err
    assert err.count("\n") == 1
    code, out, err = run_cli("charlm", "train", "--resume", "--steps", "3", "--out", ckpt,
                             "--corpus", str(moved), "--no-progress")  # fmt: skip
    assert code == 0, err
    assert f"corpus {moved.resolve()}" in out and "step 3" in out
    assert load_model(ckpt)[1]["corpus"]["paths"] == [str(moved.resolve())]
    (moved / "mod2.py").write_text("something else\n")
    code, _, err = run_cli("charlm", "train", "--resume", "--steps", "4", "--out", ckpt,
                           "--corpus", str(moved))  # fmt: skip
    assert code == 2 and "corpus has changed" in err


def test_cli_trains_an_embedding_model(tmp_path, run_cli):
    folder = write_corpus(tmp_path / "c")
    ckpt = str(tmp_path / "m.st")
    common = ["--corpus", str(folder), "--hidden", "8", "--batch", "4", "--seq-len", "16"]
    code, out, err = run_cli("charlm", "train", *common, "--embed", "6", "--steps", "3",
                             "--no-progress", "--out", ckpt)  # fmt: skip
    assert code == 0, err
    assert "embedding 6" in out
    model, vocab, meta = cl.load_charlm(ckpt)
    assert model.params["embed.weight"].shape == (vocab.size, 6)
    code, _, err = run_cli("charlm", "train", "--resume", "--embed", "5", "--out", ckpt)
    assert code == 2 and "--embed 5 differs from the checkpoint's 6" in err
    code, out, err = run_cli("charlm", "sample", ckpt, "--length", "5")
    assert code == 0 and len(out) == 5 + 1
