"""The README's code example runs and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_reaches_the_pareto_set():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    # The Pareto set of ‖x − 1‖² and ‖x + 1‖² is the segment from (−1, −1) to (1, 1).
    x = np.asarray(namespace["x"])
    assert abs(x[0] - x[1]) < 1e-2 and np.all(np.abs(x) <= 1.0 + 1e-3), x
    np.testing.assert_allclose(np.sum(namespace["weights"]), 1.0, rtol=1e-5)


def test_methods_table_lists_exactly_the_exported_methods():
    from mtl_jax import weighting

    section = README.read_text().split("## Methods", 1)[1]
    listed = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    assert sorted(listed) == sorted(weighting.METHODS)
    assert len(listed) == len(set(listed))
