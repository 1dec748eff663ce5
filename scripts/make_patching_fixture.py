"""Write tests/data/patching/recall_lstm_T20_H16.safetensors, the trained recall LSTM that
tests/test_patching.py reads (T = 20, H = 16, seed 0; about 3 s). Run from the repository
root: `python scripts/make_patching_fixture.py`. The file is committed; rerun only to
change it (the tests assert what its maps show, so check them after)."""

from __future__ import annotations

import sys

from gatescope.cli import main

OUT = "tests/data/patching/recall_lstm_T20_H16.safetensors"

if __name__ == "__main__":
    sys.exit(
        main(
            [
                "train", "--task", "recall", "--arch", "lstm", "--length", "20",
                "--hidden", "16", "--seed", "0", "--dtype", "float64", "--no-progress",
                "--force", "--out", OUT,
            ]
        )
    )  # fmt: skip
