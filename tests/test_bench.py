"""The benchmark harness itself (benchmarks/bench.py): it runs, and it records what it says.

Never a time asserted: only that the numbers exist, are positive and are wired to the right
places (tables, JSON, targets in bold)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("threadpoolctl")

pytestmark = pytest.mark.torch
ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
TINY = "4,10,3,8"


def run_bench(tmp_path, *args: str) -> tuple[dict, str]:
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(BENCH)])}
    env.pop("GATESCOPE_BACKEND", None)
    cmd = [sys.executable, str(BENCH / "bench.py"), "--json", str(out_json),
           "--markdown", str(out_md), *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == out_md.read_text()  # what it prints is what it writes
    return json.loads(out_json.read_text()), out_md.read_text()


def positive_blocks(rec: dict, calls: int, blocks: int) -> None:
    assert len(rec["blocks"]) == blocks and all(len(b) == calls for b in rec["blocks"])
    assert all(t > 0 for b in rec["blocks"] for t in b)
    medians = [statistics.median(b) for b in rec["blocks"]]
    assert rec["seconds"] == pytest.approx(statistics.median(medians))  # of the block medians


@pytest.mark.slow
def test_quick_run_on_a_tiny_case_records_every_measurement(tmp_path):
    res, md = run_bench(tmp_path, "--quick", "--arch", "lstm", "rnn", "--shapes", TINY,
                        "--threads", "1", "--calls", "3", "--blocks", "2")  # fmt: skip
    m = res["machine"]
    for key in ("cpu", "cores", "numpy", "numpy_blas", "numba", "torch", "torch_blas", "date"):
        assert m[key], key
    assert m["cores"] >= 1 and res["threads"] == [1] and "numba_layer" in m
    assert res["plan"]["method"] == "blocks" and res["plan"]["shapes"] == [[4, 10, 3, 8]]
    assert res["peak"]["1"]["best"] == max(res["peak"]["1"]["numpy"], res["peak"]["1"]["torch"]) > 0

    cases = {(r["arch"], r["mode"]) for r in res["speed"]}
    assert cases == {(a, m) for a in ("lstm", "rnn") for m in ("train", "infer")}
    for r in res["speed"]:
        assert r["threads"] == 1 and r["clock"] == "wall" and r["flops"] > 0
        for fw in ("gatescope", "torch"):
            positive_blocks(r[fw], calls=3, blocks=2)
    train = {r["arch"]: r["flops"] for r in res["speed"] if r["mode"] == "train"}
    infer = {r["arch"]: r["flops"] for r in res["speed"] if r["mode"] == "infer"}
    assert train == {a: 3 * f for a, f in infer.items()}  # backward: twice the forward's
    assert train["lstm"] == 4 * train["rnn"]  # four gate blocks against one

    from gatescope.nn.lstm_variants import VARIANTS

    assert {r["variant"] for r in res["variants"]} == set(VARIANTS) - {"vanilla"}
    for r in res["variants"]:
        assert r["ratio"] == pytest.approx(r["seconds"] / r["vanilla_seconds"]) and r["ratio"] > 0
    assert {(r["arch"], r["mode"]) for r in res["numpy_path"]} <= cases
    for r in res["numpy_path"]:
        assert r["numpy_seconds"] > 0 and r["ratio"] > 0
        assert r["accelerated_backend"] in ("numba", "numpy")
    for r in res["memory"]:
        assert r["peak_bytes"] >= r["kept_bytes"] > 0
    (lm,) = res["charlm"]
    assert "LSTM 2x128" in lm["name"] and lm["threads"] == 1
    for fw in ("gatescope", "torch"):
        positive_blocks(lm[fw], calls=3, blocks=2)
        assert lm[fw]["steps_per_second"] == pytest.approx(1 / lm[fw]["seconds"])
    names = {r["name"] for r in res["threads_steps"]}
    assert len(names) == 4 and any("demo: LSTM" in n for n in names)

    assert m["cpu"] in md and f"NumPy {m['numpy']}" in md and f"PyTorch {m['torch']}" in md
    assert "| case | 1 thread train | 1 thread infer |" in md
    assert "| LSTM (4, 10, 3, 8) |" in md and "| peephole |" in md and lm["name"] in md


@pytest.mark.slow
def test_processes_and_alternate_are_labelled(tmp_path):
    common = ["--arch", "rnn", "--shapes", TINY, "--threads", "1", "--calls", "2",
              "--blocks", "1", "--mode", "infer", "--no-variants", "--no-numpy",
              "--no-charlm", "--no-steps", "--no-memory"]  # fmt: skip
    res, md = run_bench(tmp_path, "--processes", *common)
    assert res["plan"]["method"] == "processes" and "own fresh process" in md
    (r,) = res["speed"]
    positive_blocks(r["gatescope"], calls=2, blocks=1)
    positive_blocks(r["torch"], calls=2, blocks=1)
    res, md = run_bench(tmp_path, "--alternate", *common)
    assert res["plan"]["method"] == "alternate" and "ALTERNATING" in md
    (r,) = res["speed"]
    assert len(r["torch"]["blocks"][0]) == 2  # calls x blocks alternating calls


def test_cells_over_target_are_bold_and_thread_counts_parse():
    sys.path.insert(0, str(BENCH))
    import bench

    from gatescope.threads import all_cores

    assert bench._cell(1.2, 12.0, 10.0, 1.0) == "**1.20** (12.0 / 10.0 ms)"
    assert bench._cell(0.9, 9.0, 10.0, 1.0) == "0.90 (9.00 / 10.0 ms)"
    assert bench._cell(3.0, 3.0, 1.0, None) == "3.00 (3.00 / 1.00 ms)"
    assert bench.parse_thread_counts("1,all") == sorted({1, all_cores()})
    assert bench.parse_thread_counts("2,2") == [2]
    with pytest.raises(Exception, match="positive integer or 'all'"):
        bench.parse_thread_counts("1,0")
    assert bench.target((64, 100, 32, 128)) == 1.0 and bench.target((1, 500, 8, 64)) == 1.3
    assert bench.summary([[3.0, 1.0, 2.0], [5.0, 4.0, 6.0], [0.5, 9.0, 7.0]]) == 5.0
