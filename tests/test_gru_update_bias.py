"""The GRU's update-gate bias: where it goes, what it does at initialisation, where it is
refused, and that it survives checkpoints and `--resume`."""

from __future__ import annotations

import numpy as np
import pytest

import gatescope as gs
from gatescope.model import SequenceModel, load_model, save_model
from gatescope.nn import RecurrentConfig
from gatescope.nn.functional import sigmoid

TINY = ["--hidden", "4", "--batch", "4", "--eval-every", "5", "--eval-size", "8", "--quiet"]
GRU_RECALL = ["--task", "recall", "--arch", "gru", "--length", "4", *TINY]


@pytest.mark.parametrize("reset_after", [False, True])
def test_update_bias_fills_the_z_block_of_every_layer(reset_after):
    H = 4
    gru = gs.GRU(3, H, num_layers=2, update_bias=3.0, reset_after=reset_after)
    for k in range(2):
        b = gru.params[f"bias_l{k}"]  # [r, z, n]
        assert np.array_equal(b[H : 2 * H], np.full(H, 3.0))
        assert not b[:H].any() and not b[2 * H :].any()
        if reset_after:
            assert not gru.params[f"bias_hn_l{k}"].any()
    cell = gs.GRUCell(3, H, update_bias=-1.5)
    assert np.array_equal(cell.params["bias"][H : 2 * H], np.full(H, -1.5))
    assert gs.GRU(3, H, bias=False, update_bias=3.0).params.keys() == {
        "weight_ih_l0",
        "weight_hh_l0",
    }


def test_the_default_is_pytorchs_zero_and_the_weights_do_not_depend_on_it():
    plain, biased = gs.GRU(3, 4, seed=7), gs.GRU(3, 4, seed=7, update_bias=2.0)
    assert not plain.params["bias_l0"].any()
    assert np.array_equal(plain.params["weight_hh_l0"], biased.params["weight_hh_l0"])


def test_a_positive_update_bias_keeps_the_state_at_the_start():
    """z = sigmoid(W x + U h + b): its mean over random inputs moves from ~0.5 to ~sigmoid(b)."""
    x = np.random.default_rng(0).normal(size=(16, 30, 3))
    z = {b: gs.GRU(3, 32, update_bias=b, seed=1) for b in (0.0, 3.0)}
    for b, gru in z.items():
        gru(x)
        z[b] = gru.trace["z"].mean()
    assert abs(z[0.0] - 0.5) < 0.05
    assert abs(z[3.0] - float(sigmoid(np.array(3.0)))) < 0.05


def test_update_bias_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match="update_bias is a GRU option"):
        RecurrentConfig("lstm", 3, 4, update_bias=1.0)
    with pytest.raises(ValueError, match="update_bias must be finite"):
        RecurrentConfig("gru", 3, 4, update_bias=float("nan"))
    RecurrentConfig("lstm", 3, 4, update_bias=0.0)  # the default is fine everywhere


def test_update_bias_survives_a_model_file(tmp_path):
    model = SequenceModel.build("gru", 3, 4, 2, "classify_last", update_bias=2.5)
    save_model(tmp_path / "m.safetensors", model)
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert loaded.config.layer_options["update_bias"] == 2.5
    assert loaded.config.recurrent_config().update_bias == 2.5


def test_cli_update_bias(tmp_path, run_cli):
    out = tmp_path / "g.safetensors"
    code, _, err = run_cli(
        "train", *GRU_RECALL, "--update-bias", "3", "--steps", "3", "--out", str(out)
    )
    assert code == 0, err
    model, _ = load_model(out)
    assert model.config.layer_options["update_bias"] == 3.0

    # --resume refuses to change it, and accepts it repeated
    code, _, err = run_cli("train", "--resume", str(out), "--update-bias", "1", "--steps", "5")
    assert code == 2 and "--update-bias 1.0 (the checkpoint has 3.0)" in err
    code, _, err = run_cli("train", "--resume", str(out), "--update-bias", "3", "--steps", "5")
    assert code == 0, err

    for argv, message in (
        (["--arch", "lstm"], "--update-bias applies to --arch gru only, not lstm"),
        (["--arch", "gru", "--update-bias", "inf"], "--update-bias must be a finite number"),
    ):
        rest = ["--update-bias", "3"] if "--update-bias" not in argv else []
        code, _, err = run_cli(
            "train", "--task", "recall", "--length", "4", *TINY, *argv, *rest,
            "--steps", "1", "--out", str(tmp_path / "x"),
        )  # fmt: skip
        assert code == 2 and message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
