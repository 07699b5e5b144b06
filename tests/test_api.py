"""`import tc`: the small public API. Every name in `tc.__all__` resolves lazily to its layer, and its docstring
carries a runnable example, which this test runs (doctest, against a private MLflow store in a tmp dir)."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest

import tc
from tests.conftest import ROOT

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_the_api_is_small_and_every_name_resolves():
    assert 10 <= len(tc.__all__) <= 20  # small: what a user scripts with, not every module
    for name in tc.__all__:
        obj = getattr(tc, name)
        assert obj.__name__ == name, f"tc.{name} is {obj.__module__}.{obj.__name__}: one name for one thing"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tc.nothing  # noqa: B018


@pytest.mark.parametrize("name", tc.__all__)
def test_every_public_name_has_an_example_that_runs(name, mlflow_store):
    obj = getattr(tc, name)
    assert ">>>" in (obj.__doc__ or ""), f"tc.{name} has no example"
    tests = doctest.DocTestFinder(recurse=False).find(obj, f"tc.{name}", globs={})
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.tries > 0 and runner.failures == 0, "".join(report)


def test_importing_tc_loads_neither_torch_nor_mlflow():
    code = "import sys, tc; print(sorted(m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]
