"""The char LM shipped inside the package: it loads, it is small, it says how it was made,
and `--pretrained` stands in for a checkpoint wherever a char LM is taken."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gatescope import charlm, pretrained
from gatescope.model import SequenceModel

CORPUS = Path(__file__).parent / "data" / "v0.1.0" / "corpus.txt"  # CPython's textwrap.py


def test_the_shipped_model_is_small_and_says_how_it_was_trained():
    path = pretrained.path()
    assert path.is_file() and path.stat().st_size < 5_000_000
    how = pretrained.info()
    for key in ("command", "seed", "minutes", "machine", "heldout_bits_per_char", "date"):
        assert key in how, key
    assert how["machine"]["cpu"] and how["machine"]["cores"] >= 1
    assert 0 < how["heldout_bits_per_char"] < 2.5


def test_load_gives_a_char_lm_on_the_one_stack():
    model, vocab, meta = pretrained.load()
    assert isinstance(model, SequenceModel)
    assert model.config.kind == "classify_steps" and model.config.input_size == vocab.size
    ids = vocab.encode(CORPUS.read_text()[:4000])
    bpc, n = charlm.bits_per_char(model, ids)
    assert n == ids.size - 1
    assert bpc < 0.5 * math.log2(vocab.size)  # far better than a uniform guess


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown pretrained model 'linux'"):
        pretrained.path("linux")


@pytest.mark.slow
def test_pretrained_stands_in_for_a_checkpoint(run_cli, tmp_path):
    r = run_cli("charlm", "sample", "--pretrained", "--length", 60, "--seed", 1)
    assert r.code == 0, r.err
    assert len(r.out.rstrip("\n")) >= 60
    r = run_cli("charlm", "eval", "--pretrained", "--text", CORPUS, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["bits_per_char"] < 3
    r = run_cli("cells", "--pretrained", "--text", CORPUS, "--json", "--max-chars", 3000)
    assert r.code == 0, r.err
    assert "in_string" in json.loads(r.out)["features"]
    out = tmp_path / "x.html"
    r = run_cli("explore", "--pretrained", "--text", CORPUS, "--max-chars", 800, "-o", out)
    assert r.code == 0, r.err
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (("charlm", "sample", "m.safetensors", "--pretrained"), "not both"),
        (("charlm", "sample"), "give a checkpoint CKPT, or --pretrained"),
        (("cells", "--text", str(CORPUS)), "give a checkpoint CKPT, or --pretrained"),
    ],
)
def test_checkpoint_or_pretrained_errors_are_one_line(run_cli, argv, message):
    r = run_cli(*argv)
    assert r.code == 2 and message in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1
