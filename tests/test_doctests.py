"""The examples in the public API's docstrings run, and every public name has one.

The public API is what ``latentquant``, ``latentquant.metrics``, ``latentquant.data``,
``latentquant.models`` and ``latentquant.train`` export (their ``__all__``). Each
example is a doctest: it runs here, in a temporary working directory, so the
reference pages built from these docstrings cannot go stale.
"""

import doctest
import importlib
import inspect

import pytest
import torch

PACKAGES = ["latentquant", "latentquant.metrics", "latentquant.data", "latentquant.models", "latentquant.train"]


def public_names():
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            if not name.startswith("__"):
                yield package, name, getattr(module, name)


def example_modules():
    """The packages and every module that defines a public name: where the examples live."""
    names = set(PACKAGES)
    for _, _, obj in public_names():
        if inspect.isclass(obj) or inspect.isfunction(obj):
            names.add(obj.__module__)
    return sorted(names)


@pytest.mark.parametrize("module_name", example_modules())
def test_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with torch.random.fork_rng():  # examples seed torch; the tests after them keep their random state
        for test in finder.find(module, module_name):
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"


# every public class and function (the constants, DATASETS and ARCHS, are documented where they are defined)
CALLABLES = [(p, n) for p, n, obj in public_names() if inspect.isclass(obj) or inspect.isfunction(obj)]


@pytest.mark.parametrize("package, name", CALLABLES)
def test_public_name_has_an_example(package, name):
    obj = getattr(importlib.import_module(package), name)
    assert ">>>" in (inspect.getdoc(obj) or ""), f"{package}.{name} has no example in its docstring"
