"""Every example in a docstring runs: the formulas' worked examples stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import agents
import devtools
import streams

MODULES = sorted(
    f"{package.__name__}.{info.name}"
    for package in (streams, agents, devtools)
    for info in pkgutil.iter_modules(package.__path__)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
