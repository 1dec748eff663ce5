"""The command's shared behaviour: one BLAS policy, one-line errors."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info

from gatescope import cli


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture
def probe(monkeypatch):
    """A `gatescope probe` command that records the BLAS thread counts it runs with."""
    seen: list[list[int]] = []
    real_build = cli.build_parser

    def build():
        parser = real_build()
        sub = next(a for a in parser._actions if a.dest == "command")
        sub.add_parser("probe").set_defaults(handler=lambda args: seen.append(blas_threads()))
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return seen


def test_commands_run_blas_on_the_configured_number_of_threads(monkeypatch, probe):
    before = blas_threads()
    assert cli.main(["probe"]) == 0
    monkeypatch.setenv("GATESCOPE_BLAS_THREADS", "2")
    assert cli.main(["probe"]) == 0
    assert probe[0] and all(n == 1 for n in probe[0])
    assert probe[1] == [min(2, b) for b in before]
    assert blas_threads() == before  # restored afterwards


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_a_bad_thread_count_is_a_one_line_error(monkeypatch, capsys, probe, value):
    monkeypatch.setenv("GATESCOPE_BLAS_THREADS", value)
    assert cli.main(["probe"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: GATESCOPE_BLAS_THREADS must be a positive integer")
    assert err.count("\n") == 1
    assert probe == []


def test_threads_come_from_the_option_then_the_environment_then_the_default(monkeypatch, probe):
    from gatescope import threads

    before = blas_threads()
    for k in threads.THREADS_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("GATESCOPE_BLAS_THREADS", "1")  # the old name: still read
    monkeypatch.setenv("GATESCOPE_THREADS", "2")  # the new one wins over it
    assert cli.main(["probe"]) == 0
    assert cli.main(["--threads", "1", "probe"]) == 0  # the option wins over both
    monkeypatch.delenv("GATESCOPE_THREADS")
    monkeypatch.delenv("GATESCOPE_BLAS_THREADS")
    monkeypatch.setattr(threads, "DEFAULT_THREADS", "all")  # the one line to flip
    assert cli.main(["probe"]) == 0
    all_cores = threads.all_cores()
    assert probe == [
        [min(2, b) for b in before],
        [1] * len(before),
        [min(all_cores, b) for b in before],
    ]
    assert threads.parse_threads("all") == all_cores >= 1
    assert threads.parse_threads(3) == 3


@pytest.mark.parametrize("value", ["0", "two", "", "1.5"])
def test_bad_thread_counts_name_their_source(monkeypatch, capsys, probe, value):
    from gatescope import threads

    with pytest.raises(ValueError, match="^DEFAULT_THREADS must be a positive integer or 'all'"):
        monkeypatch.setattr(threads, "DEFAULT_THREADS", value)
        threads.default_threads()
    monkeypatch.setenv("GATESCOPE_THREADS", value)
    assert cli.main(["probe"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: GATESCOPE_THREADS must be a positive integer or 'all'")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--threads", value, "probe"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --threads: must be a positive integer or 'all'")


def test_a_commands_own_threads_option_defaults_to_the_global_count(monkeypatch):
    seen = []
    real_build = cli.build_parser

    def build():
        parser = real_build()
        sub = next(a for a in parser._actions if a.dest == "command")
        p = sub.add_parser("own")
        p.add_argument("--threads", type=int)
        p.set_defaults(handler=lambda args: seen.append((args.threads, blas_threads())))
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    monkeypatch.delenv("GATESCOPE_BLAS_THREADS", raising=False)
    monkeypatch.setenv("GATESCOPE_THREADS", "1")
    assert cli.main(["own"]) == 0
    assert cli.main(["--threads", "2", "own"]) == 0
    assert cli.main(["own", "--threads", "3"]) == 0  # its own option, given: kept
    assert [n for n, _ in seen] == [1, 2, 3]
    assert all(n == 1 for n in seen[0][1])


def test_the_blas_helper_limits_this_process_and_the_processes_it_starts(monkeypatch):
    import os

    from gatescope.threads import BLAS_ENV, limit_blas_threads

    for k in BLAS_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # set by the user: kept
    before = blas_threads()
    with limit_blas_threads(1):
        assert all(n == 1 for n in blas_threads())
        assert os.environ["OPENBLAS_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
        assert os.environ["OMP_NUM_THREADS"] == "3"
    assert blas_threads() == before
    assert "OPENBLAS_NUM_THREADS" not in os.environ and os.environ["OMP_NUM_THREADS"] == "3"
    with limit_blas_threads(2, override_env=True):
        assert os.environ["OMP_NUM_THREADS"] == "2"
    assert os.environ["OMP_NUM_THREADS"] == "3"
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        with limit_blas_threads(0):
            pass


def test_a_broken_command_module_is_an_error_not_a_missing_command(monkeypatch):
    import importlib

    real = importlib.import_module

    def broken(name, *a):
        if name == "gatescope.cli.plot":
            raise ModuleNotFoundError("No module named 'gatescope.cli.plot'", name=name)
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()
