"""Sweeps: run specs and ids, the results file, executors (serial, local processes, a Dask
cluster started here on 127.0.0.1), interruption and resume, failed runs, capacity curves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gatescope.inspect.capacity import capacity_curve
from gatescope.sweep import (
    RESULTS_FILE,
    TIMING_FIELDS,
    ResultsFile,
    RunSpec,
    SweepError,
    make_grid,
    read_results,
    run_one,
    run_sweep,
)

# tiny runs: a few steps of a 4-unit network on recall of length 3..5
TINY = {
    "hidden_size": 4,
    "eval_n": 50,
    "train": {"steps": 6, "batch_size": 4, "eval_every": 3, "eval_size": 20},
}
TINY_FLAGS = [
    "--hidden", "4", "--eval-n", "50", "--steps", "6", "--batch-size", "4",
    "--eval-every", "3", "--eval-size", "20", "--no-progress",
]  # fmt: skip
CLI = "import sys; from gatescope.cli import main; sys.exit(main(sys.argv[1:]))"
SCHEDULER_START_S = 120  # how long the Dask processes may take to come up before a test fails


def tiny_grid(lengths=(3, 5), seeds=2, archs=("lstm", "gru", "rnn")) -> list[RunSpec]:
    return make_grid("recall", list(archs), list(lengths), seeds, **TINY)


def without_timing(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING_FIELDS}


def rows_by_id(out: Path) -> dict[str, dict]:
    rows = read_results(out).rows
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "a run was recorded twice"
    return {r["id"]: without_timing(r) for r in rows}


# ----------------------------------------------------------------------------- specs


def test_run_id_is_a_stable_hash_of_the_whole_spec():
    spec = RunSpec(task="recall", arch="lstm", length=10, seed=0, train={"steps": 5, "lr": 0.1})
    same = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    reordered = RunSpec(
        task="recall", arch="lstm", length=10, seed=0, train={"lr": 0.1, "steps": 5}
    )
    assert same == spec and same.run_id == spec.run_id == reordered.run_id
    assert len(spec.run_id) == 16 and int(spec.run_id, 16) >= 0
    changes = [
        {"arch": "gru"},
        {"length": 11},
        {"seed": 1},
        {"hidden_size": 33},
        {"train": {"steps": 6, "lr": 0.1}},
        {"task_options": {"noise_std": 0.5}},
        {"layer_options": {"forget_bias": 0.0}},
        {"eval_n": 10},
    ]
    ids = {RunSpec.from_dict(spec.to_dict() | c).run_id for c in changes}
    assert len(ids) == len(changes) and spec.run_id not in ids


def test_run_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="length must be a positive integer"):
        RunSpec(task="recall", arch="lstm", length=0, seed=0)
    with pytest.raises(ValueError, match="train must not contain 'seed'"):
        RunSpec(task="recall", arch="lstm", length=5, seed=0, train={"seed": 3})
    with pytest.raises(ValueError, match="JSON values"):
        RunSpec(task="recall", arch="lstm", length=5, seed=0, train={"lr": float("nan")})
    with pytest.raises(ValueError, match="unknown run spec field"):
        RunSpec.from_dict({"task": "recall", "arch": "lstm", "length": 5, "seed": 0, "x": 1})


def test_make_grid_is_seed_major_and_complete():
    specs = make_grid("recall", ["lstm", "rnn"], [5, 10], 2)
    assert [(s.seed, s.length, s.arch) for s in specs] == [
        (0, 5, "lstm"), (0, 5, "rnn"), (0, 10, "lstm"), (0, 10, "rnn"),
        (1, 5, "lstm"), (1, 5, "rnn"), (1, 10, "lstm"), (1, 10, "rnn"),
    ]  # fmt: skip
    assert [s.seed for s in make_grid("recall", ["lstm"], [5], [7, 3])] == [7, 3]
    with pytest.raises(ValueError, match="lengths must not repeat"):
        make_grid("recall", ["lstm"], [5, 5], 1)


# ----------------------------------------------------------------------------- one run


def test_run_one_is_deterministic_and_complete():
    spec = tiny_grid(lengths=(4,), seeds=1, archs=("gru",))[0]
    a, b = run_one(spec), run_one(spec.to_dict())
    assert without_timing(a) == without_timing(b)
    assert a["status"] == "ok" and a["id"] == spec.run_id and a["spec"] == spec.to_dict()
    assert a["metric_name"] == "accuracy" and 0.0 <= a["metric"] <= 1.0
    assert a["solved"] == (a["metric"] >= a["threshold"]) and a["baseline"] == 1 / 8
    assert a["steps"] == 6 and [h["step"] for h in a["history"]] == [3, 6]
    assert all("seconds" not in h for h in a["history"])
    assert set(TIMING_FIELDS) <= set(a) and a["seconds"] >= 0
    json.dumps(a, allow_nan=False)  # strict JSON


def test_run_one_records_a_failure_instead_of_raising():
    bad = RunSpec(task="recall", arch="lstm", length=4, seed=0, task_options={"n_symbols": 1})
    row = run_one(bad)
    assert row["status"] == "error" and row["id"] == bad.run_id
    assert row["error"].startswith("ValueError: n_symbols must be an integer >= 2")
    assert "Traceback" in row["traceback"] and "metric" not in row


# ----------------------------------------------------------------------------- results file


def test_results_file_drops_and_repairs_a_torn_last_line(tmp_path):
    f = ResultsFile(tmp_path / RESULTS_FILE)
    assert f.read().rows == [] and not f.repair()
    f.append({"id": "a", "status": "ok"})
    f.append({"id": "b", "status": "ok"})
    with open(f.path, "ab") as fh:  # a write cut short by a crash
        fh.write(b'{"id": "c", "sta')
    got = f.read()
    assert [r["id"] for r in got.rows] == ["a", "b"] and got.torn_tail and got.bad_lines == 0
    assert f.repair() and not f.read().torn_tail
    f.append({"id": "c", "status": "ok"})
    assert [r["id"] for r in f.read().rows] == ["a", "b", "c"]
    assert f.path.read_bytes().count(b"\n") == 3


def test_results_file_skips_unreadable_lines_and_keeps_the_last_row_per_id(tmp_path):
    path = tmp_path / RESULTS_FILE
    path.write_text('{"id": "a", "status": "error"}\nnot json\n[1]\n{"id": "a", "status": "ok"}\n')
    got = ResultsFile(path).read()
    assert got.bad_lines == 2 and got.latest == {"a": {"id": "a", "status": "ok"}}
    with pytest.raises(ValueError, match="no sweep results"):
        read_results(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- executors


@pytest.fixture(scope="module")
def serial_rows(tmp_path_factory):
    """The reference: the tiny grid run in this process."""
    out = tmp_path_factory.mktemp("serial")
    summary = run_sweep(tiny_grid(), out, executor="serial", progress=False)
    assert (summary.total, summary.ok, summary.failed, summary.skipped) == (12, 12, 0, 0)
    return rows_by_id(out)


def test_local_processes_give_the_serial_rows(tmp_path, serial_rows):
    summary = run_sweep(tiny_grid(), tmp_path, executor="local", workers=2, progress=False)
    assert (summary.ok, summary.failed) == (12, 0)
    assert rows_by_id(tmp_path) == serial_rows
    workers = {r["worker"] for r in read_results(tmp_path).rows}
    assert f":{os.getpid()}" not in "".join(workers)  # ran in other processes


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory):
    """A `dask scheduler` and a `dask worker` (2 processes) on 127.0.0.1, as subprocesses."""
    pytest.importorskip("distributed")
    from distributed import Client

    tmp_path = tmp_path_factory.mktemp("dask")
    file = tmp_path / "scheduler.json"
    log = open(tmp_path / "dask.log", "wb")  # noqa: SIM115 - closed below
    common = {"stdout": log, "stderr": subprocess.STDOUT, "start_new_session": True}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(file)],
            **common,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + SCHEDULER_START_S
        while not (file.exists() and file.stat().st_size > 0):
            assert procs[0].poll() is None, (tmp_path / "dask.log").read_text()
            assert time.monotonic() < deadline, "the Dask scheduler did not start"
            time.sleep(0.2)
        address = json.loads(file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--host", "127.0.0.1",
                 "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                **common,
            )
        )  # fmt: skip
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=SCHEDULER_START_S)
        yield address
    finally:
        for p in reversed(procs):  # the worker (and its nannies' children) first
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        log.close()


@pytest.mark.dask
@pytest.mark.slow
def test_dask_cluster_gives_the_local_rows(tmp_path, serial_rows, dask_scheduler):
    summary = run_sweep(
        tiny_grid(), tmp_path, executor="dask", scheduler=dask_scheduler, progress=False
    )
    assert (summary.ok, summary.failed) == (12, 0), [r["error"] for r in summary.failures]
    rows = rows_by_id(tmp_path)
    assert rows.keys() == serial_rows.keys()
    for rid, row in rows.items():
        assert row == serial_rows[rid], (row, serial_rows[rid])
    assert len({r["worker"] for r in read_results(tmp_path).rows}) >= 1


@pytest.mark.dask
@pytest.mark.slow
def test_dask_executor_without_a_scheduler_starts_a_local_cluster(tmp_path, serial_rows):
    pytest.importorskip("distributed")
    specs = tiny_grid(lengths=(3,), seeds=1)
    summary = run_sweep(specs, tmp_path, executor="dask", workers=1, progress=False)
    assert (summary.ok, summary.failed) == (3, 0)
    rows = rows_by_id(tmp_path)
    assert rows == {s.run_id: serial_rows[s.run_id] for s in specs}


@pytest.mark.dask
@pytest.mark.slow
def test_cli_sweep_on_a_dask_scheduler_then_resume_locally(tmp_path, dask_scheduler, run_cli):
    out = tmp_path / "sweep"
    args = ["sweep", "--lengths", "3,4", "--seeds", "1", "--arch", "lstm,rnn", *TINY_FLAGS]
    assert run_cli(*args, "--out", out, "--scheduler", dask_scheduler).code == 0
    first = read_results(out).rows
    assert len(first) == 4 and all(r["status"] == "ok" for r in first)
    # the same command with one more seed, on the local executor: only the new seed runs
    more = ["sweep", "--lengths", "3,4", "--seeds", "2", "--arch", "lstm,rnn", *TINY_FLAGS]
    assert run_cli(*more, "--out", out, "--workers", "1").code == 0
    rows = read_results(out).rows
    assert rows[:4] == first and len(rows) == 8
    assert sorted(r["spec"]["seed"] for r in rows[4:]) == [1, 1, 1, 1]


def test_dask_executor_without_dask_is_a_clear_error(tmp_path, monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(SweepError, match=r"pip install 'gatescope\[dask\]'"):
        run_sweep(tiny_grid(seeds=1), tmp_path, executor="dask", progress=False)
    code, _, err = run_cli("sweep", "--lengths", "3", "--executor", "dask", "--out", tmp_path)
    assert code == 2 and "error: the dask executor needs dask.distributed" in err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- resume, failures


def test_interrupted_sweep_resumes_without_repeating_runs(tmp_path):
    specs = tiny_grid(seeds=1)  # 6 runs

    def stop_after_two(row, seen=[]):  # noqa: B006 - counts rows across calls of this test
        seen.append(row["id"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(specs, tmp_path, executor="serial", progress=False, on_row=stop_after_two)
    before = read_results(tmp_path).rows
    assert len(before) == 2
    ran = []
    summary = run_sweep(
        specs, tmp_path, executor="serial", progress=False, on_row=lambda r: ran.append(r["id"])
    )
    assert (summary.total, summary.skipped, summary.ok) == (6, 2, 4)
    assert not set(ran) & {r["id"] for r in before}
    after = read_results(tmp_path).rows
    assert after[:2] == before and {r["id"] for r in after} == {s.run_id for s in specs}
    again = run_sweep(specs, tmp_path, executor="serial", progress=False)
    assert (again.skipped, again.ok) == (6, 0) and len(read_results(tmp_path).rows) == 6


@pytest.mark.slow
def test_killed_sweep_process_resumes_without_repeating_runs(tmp_path, run_cli):
    """SIGKILL the whole `gatescope sweep` process group after two rows, then run it again.
    (Its own Popen: run_cli_process runs a command to the end, this one is killed mid-way.)"""
    out = tmp_path / "sweep"
    args = ["sweep", "--lengths", "3,4,5", "--seeds", "2", *TINY_FLAGS, "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, *args, "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    results = out / RESULTS_FILE
    try:
        while True:
            lines = results.read_bytes().count(b"\n") if results.exists() else 0
            if lines >= 2 or proc.poll() is not None:
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    before = read_results(out).rows
    assert 2 <= len(before) < 18, "kill the sweep sooner: it had finished"
    assert run_cli(*args, "--workers", "2").code == 0
    after = read_results(out).rows
    assert after[: len(before)] == before and len(after) == 18
    assert len({r["id"] for r in after}) == 18  # nothing ran twice


@pytest.mark.slow
def test_failed_run_is_recorded_and_does_not_stop_the_sweep(tmp_path):
    bad = RunSpec(
        task="recall", arch="rnn", length=3, seed=0, task_options={"n_symbols": 1}, **TINY
    )
    specs = [*tiny_grid(lengths=(3,), seeds=1), bad]
    summary = run_sweep(specs, tmp_path, executor="local", workers=2, progress=False)
    assert (summary.ok, summary.failed) == (3, 1)
    latest = read_results(tmp_path).latest
    assert latest[bad.run_id]["status"] == "error"
    assert "n_symbols" in latest[bad.run_id]["error"] == summary.failures[0]["error"]
    # a re-run skips it; --retry-failed runs it again (and it fails again, recorded again)
    assert run_sweep(specs, tmp_path, executor="serial", progress=False).skipped == 4
    retry = run_sweep(specs, tmp_path, executor="serial", progress=False, retry_failed=True)
    assert (retry.skipped, retry.failed) == (3, 1) and len(read_results(tmp_path).rows) == 5
    points = capacity_curve(read_results(tmp_path).latest.values())
    rnn = [p for p in points if p.line.startswith("rnn")]
    # the failing run differs in a task option, so it is a line of its own, counted as failed
    assert sorted((p.line, p.runs, p.failed) for p in rnn) == [
        ("rnn (n_symbols=1)", 1, 1),
        ("rnn (n_symbols=default)", 1, 0),
    ]
    assert {p.line for p in points} - {p.line for p in rnn} == {"lstm", "gru"}


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path):
    import fcntl

    tmp_path.joinpath(".lock").touch()
    with open(tmp_path / ".lock") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(SweepError, match="another sweep is writing"):
            run_sweep(tiny_grid(seeds=1), tmp_path, executor="serial", progress=False)


# ----------------------------------------------------------------------------- curves and CLI


def _row(arch, length, seed, metric, status="ok", **spec):
    base = {"task": "recall", "arch": arch, "length": length, "seed": seed, "hidden_size": 32}
    row = {"id": f"{arch}{length}{seed}", "status": status, "spec": base | spec}
    if status == "ok":
        row |= {"metric_name": "accuracy", "metric": metric, "solved": metric is not None and metric >= 0.99,
                "baseline": 0.125, "threshold": 0.99, "higher_is_better": True}  # fmt: skip
    return row


def test_capacity_curve_counts_success_over_seeds():
    rows = [
        _row("lstm", 10, 0, 1.0), _row("lstm", 10, 1, 0.995), _row("lstm", 10, 2, 0.5),
        _row("rnn", 10, 0, 0.2), _row("rnn", 10, 1, None), _row("rnn", 10, 2, 0, "error"),
    ]  # fmt: skip
    points = {p.line: p for p in capacity_curve(rows)}
    lstm, rnn = points["lstm"], points["rnn"]
    assert (lstm.runs, lstm.solved, lstm.failed) == (3, 2, 0)
    assert lstm.success_rate == pytest.approx(2 / 3)
    assert lstm.metric_mean == pytest.approx((1.0 + 0.995 + 0.5) / 3)
    assert (lstm.metric_min, lstm.metric_max, lstm.seeds) == (0.5, 1.0, (0, 1, 2))
    assert (rnn.runs, rnn.solved, rnn.failed, rnn.metrics) == (3, 0, 1, (0.2, None))
    assert rnn.metric_mean == pytest.approx(0.2) and rnn.success_rate == 0
    # a field that differs between rows (not arch, length or seed) splits the lines
    split = capacity_curve(
        [_row("gru", 5, 0, 1.0), _row("gru", 5, 1, 1.0, hidden_size=8), _row("rnn", 5, 0, 0.1)]
    )
    assert [p.line for p in split] == ["gru (hidden_size=32)", "gru (hidden_size=8)", "rnn"]


@pytest.mark.slow
def test_sweep_plot_draws_the_curve_and_prints_the_table(tmp_path, run_cli):
    f = ResultsFile(tmp_path / RESULTS_FILE)
    for row in [_row(a, n, s, m) for a, m in (("lstm", 1.0), ("rnn", 0.3))
                for n in (10, 50, 100) for s in (0, 1)]:  # fmt: skip
        f.append(row)
    code, out, _ = run_cli("sweep-plot", tmp_path)
    assert code == 0
    png = tmp_path / "capacity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000
    assert "capacity curve" in out and "2/2 (100%)" in out and "0/2 (0%)" in out
    svg = tmp_path / "figs" / "c.svg"
    assert run_cli("sweep-plot", tmp_path, "--out", svg, "--title", "t").code == 0
    assert svg.read_text().lstrip().startswith("<?xml")


def test_cli_specs_follow_gatescope_train_for_lstm_options(tmp_path):
    from gatescope.cli import build_parser
    from gatescope.cli.sweep import _specs
    from gatescope.cli.train import DEFAULT_FORGET_BIAS
    from gatescope.train import TrainConfig

    parser = build_parser()
    argv = ["sweep", "--lengths", "5", "--seeds", "1", "--out", str(tmp_path), "--batch", "8"]
    specs = {s.arch: s for s in _specs(parser.parse_args([*argv, "--clip", "off"]))}
    assert dict(specs["lstm"].layer_options) == {"forget_bias": DEFAULT_FORGET_BIAS}
    assert dict(specs["gru"].layer_options) == dict(specs["rnn"].layer_options) == {}
    train = dict(specs["gru"].train)  # every TrainConfig field but the seed, defaults filled in
    assert train["batch_size"] == 8 and train["clip_norm"] is None
    assert train["steps"] == TrainConfig().steps and "seed" not in train
    more = ["--arch", "lstm", "--forget-bias", "1", "--variant", "peephole", "--no-early-stop"]
    (lstm,) = _specs(parser.parse_args([*argv, *more]))
    assert dict(lstm.layer_options) == {"forget_bias": 1.0, "variant": "peephole"}
    assert lstm.train["early_stop"] is False


def test_cli_errors_are_one_line(tmp_path, run_cli):
    cases = [
        (["sweep", "--lengths", "5", "--arch", "lstm,tcn"], "arch"),
        (["sweep", "--lengths", "5", "--task", "nope"], "unknown task name 'nope'"),
        (["sweep", "--lengths", "5", "--lr", "-1"], "lr"),
        (["sweep", "--lengths", "5", "--arch", "gru", "--variant", "cifg"], "--variant applies"),
        (["sweep", "--lengths", "5", "--arch", "lstm", "--variant", "x"], "variant"),
        (["sweep", "--lengths", "5", "--executor", "local", "--scheduler", "tcp://x:1"],
         "--scheduler needs --executor dask"),
        (["sweep-plot", str(tmp_path / "none")], "no sweep results"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _, err = run_cli(*argv, *(["--out", tmp_path / "o"] if argv[0] == "sweep" else []))
        assert code == 2, argv
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()  # nothing ran, nothing written
    assert run_cli("sweep", "--lengths", "5,x", "--out", tmp_path).code == 2  # argparse's exit
