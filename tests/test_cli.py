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
