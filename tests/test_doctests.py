"""Every `>>>` example in the library's docstrings (and the docs' example modules) runs
and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_examples() -> list[str]:
    library = sorted((ROOT / "mtl_jax").rglob("*.py"))
    found = [_module_name(p) for p in library if ">>>" in p.read_text(encoding="utf-8")]
    examples = sorted(EXAMPLES.glob("*.py"))
    return found + [p.stem for p in examples if ">>>" in p.read_text(encoding="utf-8")]


MODULES = _with_examples()


def test_the_examples_are_found():
    # Guards the search itself: one example per weighting method at least.
    assert sum(name.startswith("mtl_jax.weighting._") for name in MODULES) >= 27, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    # The docs' example modules import each other by their plain names.
    monkeypatch.syspath_prepend(str(EXAMPLES))
    module = sys.modules.get(name) or importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module)
    runner = doctest.DocTestRunner()
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{name}: no example ran"
    assert result.failed == 0, "".join(report)
