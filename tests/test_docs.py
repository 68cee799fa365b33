"""The docs site builds with `mkdocs build --strict`, offline, and the guides' example
code in `docs/examples/` runs and does what the guides say."""

from __future__ import annotations

import importlib.util
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
EXAMPLE_METHODS = ("my_methods:norm_balance", "my_methods:task_dropout")


def _installed(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except ModuleNotFoundError:  # a missing parent package of a dotted name
        return False


@pytest.mark.skipif(
    not _installed("mkdocs", "material", "mkdocstrings_handlers.python"),
    reason="the docs build needs mkdocs, mkdocs-material and mkdocstrings[python] "
    "(pip install -e '.[docs]')",
)
def test_site_builds_strict_and_offline(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # Strict: a broken link, a missing snippet or a docstring griffe cannot parse fails.
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    pages = list(site.rglob("*.html"))
    assert any(p.relative_to(site).parts[0] == "guides" for p in pages), pages
    # Every page's assets come from the site itself: no font, style or script is fetched
    # from elsewhere (links a reader may follow are fine).
    assets = re.compile(
        r'<(?:script|img|iframe)\b[^>]*\bsrc="(https?:[^"]+)"|<link\b[^>]*\bhref="(https?:[^"]+)"'
    )
    for page in pages:
        external = [m.group(0) for m in assets.finditer(page.read_text("utf-8"))]
        assert not external, (page, external)


@pytest.fixture
def examples_on_path(monkeypatch):
    """The example modules import each other (and are named by import path) by their
    plain names, as a user's own package would be."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in ("my_methods", "my_model", "my_task", "my_data", "test_my_methods"):
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize("name", EXAMPLE_METHODS)
def test_example_methods_pass_the_weighting_contract(name, examples_on_path):
    """The guide's test file for method authors, on the guide's two methods (the bank
    cases are left to running that file itself)."""
    module = importlib.import_module("test_my_methods")
    assert name in module.METHODS
    module.test_contract(name)
    module.test_converges_on_conflicting_quadratics(name)


def test_own_loop_example_trains_both_tasks(examples_on_path, capsys):
    namespace = runpy.run_path(str(EXAMPLES / "own_loop.py"), run_name="__main__")
    first, last = np.asarray(namespace["first_losses"]), np.asarray(namespace["losses"])
    assert np.all(last < 0.2 * first), (first, last)
    assert "step 299" in capsys.readouterr().out


def test_custom_model_task_and_data_example_learns(examples_on_path, capsys):
    namespace = runpy.run_path(str(EXAMPLES / "train_custom.py"), run_name="__main__")
    before, after = namespace["before"], namespace["after"]
    assert after["count/accuracy"] > before["count/accuracy"] + 0.4, (before, after)
    assert after["brightness/mse"] < 0.25 * before["brightness/mse"], (before, after)
    assert "last weights" in capsys.readouterr().out
