"""The explorer's sequence-to-sequence pages: `explorer.from_seq2seq` and `gatescope explore`
on a Seq2Seq checkpoint.

The model is a real one: a small dates model (Bahdanau attention, H = 32) trained for 300
steps, which already translates most held-out dates (about 3 s of CPU time); the data on
the page are compared with what the model itself gives (`translate`, `attention`, `trace`).
"""

from __future__ import annotations

import base64
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from gatescope.seq2seq import EOS, Seq2Seq
from gatescope.tasks.seq2seq import get_seq2seq_task
from gatescope.train import TrainConfig, fit
from gatescope.viz import explorer as ex

TEXTS = ["september 27, 1994", "9/27/94", "27.09.1994"]
WANT = ["1994-09-27", "1994-09-27", "1994-09-27"]


@functools.cache
def train_dates(attention: str, folder: str) -> tuple[Seq2Seq, object, str]:
    """(model, task, checkpoint path): dates, H = 32, trained 300 steps (100 without
    attention: only the plumbing is tested there). Cached: the browser tests share it."""
    task = get_seq2seq_task("dates")
    model = Seq2Seq(task.input_size, task.output_size, 32, attention=attention, seed=0)
    path = str(Path(folder) / f"dates-{attention}.safetensors")
    steps = 300 if attention != "none" else 100
    config = TrainConfig(
        steps=steps, batch_size=32, lr=1e-2, clip_norm=5.0, eval_every=steps, eval_size=100,
        checkpoint_every=0, early_stop=False,
    )  # fmt: skip
    fit(task, model, config, checkpoint_path=path, progress=False)
    return model, task, path


@pytest.fixture(scope="session")
def dates(tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "s2s-explorer"
    folder.mkdir(exist_ok=True)
    return train_dates("bahdanau", str(folder))


@pytest.fixture(scope="session")
def dates_none(tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "s2s-explorer"
    folder.mkdir(exist_ok=True)
    return train_dates("none", str(folder))


def max_len(task) -> int:
    return task.max_target_len + 5


def reference(model, task, text):
    """What the model itself gives for one text: the greedy output ids, its attention
    (T, S), and the teacher-forced trace on that output."""
    src = task.encode([text])
    out = model.translate(src, max_len=max_len(task))[0]
    att = None if model.attention is None else model.attention[0].copy()
    tgt = np.array([[*out, EOS]])
    model.forward(src, tgt)
    return out, att, model.trace


def assert_within_step(data_part, q, layer, start, exact):
    """The page's values of q (H, n) at steps start.. equal exact (n, H) within half a step."""
    got = ex.dequantised(data_part, q, layer)[:, start : start + len(exact)]  # (H, n)
    enc = data_part["quantities"][q]["layers"][layer]
    step = np.frombuffer(base64.b64decode(enc["step"]), "<f4").astype(np.float64)
    err = np.abs(got.astype(np.float64) - exact.T)
    assert (err <= step[:, None] / 2 + 1e-6 * (1 + np.abs(exact.T))).all(), (q, err.max())


# ----------------------------------------------------------------------------- data


def test_the_model_is_real_and_the_decode_is_translate(dates):
    model, task, _ = dates
    data = ex.from_seq2seq(model, task, TEXTS)
    assert data["mode"] == "seq2seq" and data["attention"] == "bahdanau"
    batch = model.translate(task.encode(TEXTS), max_len=max_len(task))  # all at once, padded
    for rec, text, ids in zip(data["texts"], TEXTS, batch, strict=True):
        assert rec["source"] == text
        assert rec["output"] == task.decode(ids)  # the page's decode is translate's
        assert rec["ended"] and rec["steps"] == len(rec["output"]) + 1  # + the EOS step
    # trained, not random: these three dates come out right
    assert [r["output"] for r in data["texts"]] == WANT


def test_attention_is_the_models_exactly(dates):
    model, task, _ = dates
    data = ex.from_seq2seq(model, task, TEXTS)
    for b, text in enumerate(TEXTS):
        _, att, _ = reference(model, task, text)
        got = ex.attention_weights(data, b)  # (T, S)
        assert got.shape == (len(WANT[b]) + 1, len(text))
        # the weights translate gave, in float32 (the model's dtype); a rerun of translate
        # may differ in the last bits (BLAS), hence the tolerance
        np.testing.assert_allclose(got, att, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    # dates attend where the field is: the year's last digit attends to the source's last
    a = ex.attention_weights(data, 0)
    assert int(np.argmax(a[3])) == len(TEXTS[0]) - 1  # '4' of 1994 <- '4' of "1994"


def test_unit_data_match_the_trace_within_the_quantisation_step(dates):
    model, task, _ = dates
    data = ex.from_seq2seq(model, task, TEXTS)
    enc, dec = data["parts"]["encoder"], data["parts"]["decoder"]
    assert set(data["parts"]) == {"encoder", "decoder"}
    assert enc["tokens"] == "".join(TEXTS)
    assert dec["tokens"] == "".join(w + ex.EOS_GLYPH for w in WANT)
    assert enc["starts"] == [0, 18, 25] and dec["starts"] == [0, 11, 22]
    for b, text in enumerate(TEXTS):
        _, _, trace = reference(model, task, text)
        rec = data["texts"][b]
        for q in ("h", "c", "i", "f", "o", "g"):
            assert_within_step(enc, q, 0, rec["enc_start"], trace["encoder"][q][0, 0])
            assert_within_step(dec, q, 0, rec["dec_start"], trace["decoder"][q][0, 0])
    # the decoder's predictions: the emitted character is the most probable at every step
    pred = dec["predictions"]
    idx = np.frombuffer(base64.b64decode(pred["idx"]), "<u2").reshape(dec["n"], pred["k"])
    labels = pred["labels"]
    assert (
        "".join(labels[i] if labels[i] != "EOS" else ex.EOS_GLYPH for i in idx[:, 0])
        == (dec["tokens"])
    )


def test_several_quantities_bits_and_the_summary(dates):
    model, task, _ = dates
    data = ex.from_seq2seq(model, task, TEXTS[0], quantities=["h", "c"], bits=8)
    for part in data["parts"].values():
        assert list(part["quantities"]) == ["h", "c"] and part["bits"] == 8
    line = ex.summary(data)
    assert "1 text(s)" in line and "bahdanau attention" in line and "8 bits" in line
    with pytest.raises(ValueError, match="quantities"):
        ex.from_seq2seq(model, task, TEXTS[0], quantities=["z"])


def test_expected_colour_of_attention(dates):
    model, task, _ = dates
    data = ex.from_seq2seq(model, task, TEXTS)
    a = ex.attention_weights(data, 1)
    lut = ex.colour_lut("seq")
    got = ex.expected_colour(data, "attention", 1, 2, a[2])
    np.testing.assert_array_equal(got, lut[np.floor(a[2] * 255 + 0.5).astype(int)])
    per_row = ex.expected_colour(data, "attention", 1, 2, a[2], mode="unit")
    np.testing.assert_array_equal(per_row[np.argmax(a[2])], lut[255])  # the row's top: darkest


def test_reversed_source_and_bidirectional_encoders_show_the_source_in_order():
    """An untrained (but real) model: the encoder parts are put in source order."""
    task = get_seq2seq_task("dates")
    model = Seq2Seq(
        task.input_size, task.output_size, 8, attention="luong", bidirectional=True,
        reverse_source=True, seed=3,
    )  # fmt: skip
    data = ex.from_seq2seq(model, task, ["Sep 27, 1994"], max_len=6)
    assert set(data["parts"]) == {"encoder", "encoder_reverse", "decoder"}
    src = task.encode(["Sep 27, 1994"])
    out = model.translate(src, max_len=6)[0]
    rec = data["texts"][0]
    ids = [*out, EOS] if rec["ended"] else out
    assert rec["steps"] == len(ids)
    model.forward(src, np.array([ids]))
    tr = model.trace
    # the forward direction read the source reversed (reverse_source): flipped back
    assert_within_step(data["parts"]["encoder"], "h", 0, 0, tr["encoder"]["h"][0, 0][::-1])
    # the backward direction read the reversed source backwards: the source order itself
    assert_within_step(
        data["parts"]["encoder_reverse"], "h", 0, 0, tr["encoder_reverse"]["h"][0, 0]
    )
    model.translate(src, max_len=6)  # the greedy decode's attention, as the page stores it
    np.testing.assert_allclose(ex.attention_weights(data, 0), model.attention[0], atol=1e-6)


def test_a_model_without_attention_says_so_and_keeps_its_unit_views(dates_none):
    model, task, _ = dates_none
    data = ex.from_seq2seq(model, task, TEXTS[:2])
    assert data["attention"] == "none"
    assert all(r["attention"] is None for r in data["texts"])
    assert ex.attention_weights(data, 0) is None
    assert "no attention" in data["notes"][0]
    page = ex.render_html(data)
    assert "no attention" in page
    assert set(data["parts"]) == {"encoder", "decoder"}
    _, _, trace = reference(model, task, TEXTS[1])
    assert_within_step(
        data["parts"]["decoder"], "f", 0, data["texts"][1]["dec_start"], trace["decoder"]["f"][0, 0]
    )
    with pytest.raises(ValueError, match="no attention"):
        ex.expected_colour(data, "attention", 0, 0, 0.5, mode="unit")


def test_bad_inputs_are_value_errors_naming_them(dates):
    model, task, _ = dates
    with pytest.raises(ValueError, match=re.escape("'#~'")):
        ex.from_seq2seq(model, task, ["Sep 27 ~ 1994#"])
    with pytest.raises(ValueError, match="texts"):
        ex.from_seq2seq(model, task, [])
    with pytest.raises(ValueError, match="texts"):
        ex.from_seq2seq(model, task, ["Sep 27, 1994", ""])
    with pytest.raises(ValueError, match="model"):
        ex.from_seq2seq("not a model", task, TEXTS)
    with pytest.raises(ValueError, match="does not fit task"):
        ex.from_seq2seq(model, get_seq2seq_task("reverse"), ["abc"])
    with pytest.raises(ValueError, match="task and texts"):
        ex.page(model)


def test_page_of_a_model_shows_inline(dates):
    model, task, _ = dates
    p = ex.page(model, task, TEXTS[:2], height=900)
    assert isinstance(p, ex.ExplorerPage)
    frame = p._repr_html_()
    assert frame.startswith('<iframe title="gatescope explorer" sandbox="allow-scripts"')
    assert "900px" in frame
    blob = re.search(r'id="gs-data">(.*?)</script>', p.html(), re.S).group(1)
    assert json.loads(blob)["texts"][1]["output"] == WANT[1]


# ----------------------------------------------------------------------------- command line


def test_cli_writes_the_page_of_a_seq2seq_checkpoint(dates, run_cli, tmp_path):
    _, _, path = dates
    out = tmp_path / "page.html"
    r = run_cli("explore", path, "--text", TEXTS[0], "--text", TEXTS[1], "--out", out)
    assert r.code == 0, r.err
    assert "2 text(s)" in r.out and "bahdanau attention" in r.out
    html = out.read_text(encoding="utf-8")
    blob = json.loads(re.search(r'id="gs-data">(.*?)</script>', html, re.S).group(1))
    assert [t["output"] for t in blob["texts"]] == WANT[:2]
    assert "default-src &#x27;none&#x27;;" in html  # the page's policy, HTML-escaped
    # no --text: held-out sources of the task
    r = run_cli("explore", path, "--task-samples", "3", "-o", out)
    assert r.code == 0, r.err
    blob = json.loads(re.search(r'id="gs-data">(.*?)</script>', out.read_text(), re.S).group(1))
    assert len(blob["texts"]) == 3 and "held-out" in " ".join(blob["notes"])


def test_cli_errors_exit_non_zero_in_one_line(dates, run_cli, tmp_path):
    _, _, path = dates
    out = tmp_path / "bad.html"
    r = run_cli("explore", path, "--text", "Sep 27 ~ 1994", "--out", out)
    assert r.code != 0 and "Traceback" not in r.err
    assert "'~'" in r.err and len(r.err.strip().splitlines()) == 1
    assert not out.exists()
    r = run_cli("explore", path, "--task", "dates", "--out", out)
    assert r.code != 0 and "Traceback" not in r.err and "--task" in r.err
