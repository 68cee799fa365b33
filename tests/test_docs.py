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


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None
    or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="mkdocs and mkdocstrings[python] are not installed (the `docs` extra)",
)
def test_site_builds_strict_and_offline(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # Strict: a broken link, a missing snippet or a docstring griffe cannot parse fails.
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    pages = list(site.rglob("*.html"))
    assert any(p.relative_to(site).parts[0] == "guides" for p in pages), pages
    # Every page is served from the site itself: no font or script fetched from elsewhere.
    for page in pages:
        for url in re.findall(r'(?:src|href)="(https?://[^"]+)"', page.read_text("utf-8")):
            assert url.startswith("https://squidfunk.github.io/"), (page, url)


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
    assert after["count/accuracy"] > before["count/accuracy"] + 0.2, (before, after)
    assert after["brightness/mse"] < 0.5 * before["brightness/mse"], (before, after)
    assert "last weights" in capsys.readouterr().out
