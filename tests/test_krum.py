"""`krum`: picks an inlier, matches a direct computation from J, Multi-Krum averages."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._krum import krum
from tests.banks import jacobian_bank


def reference_scores(jac: np.ndarray, n_byzantine: int, squared: bool) -> np.ndarray:
    """Krum scores computed from the rows themselves in float64 (Blanchard et al., Sec. 4)."""
    jac = np.asarray(jac, np.float64)
    num_tasks = len(jac)
    scores = np.empty(num_tasks)
    for i in range(num_tasks):
        others = [np.sum((jac[i] - jac[j]) ** 2) for j in range(num_tasks) if j != i]
        others = np.sort(others if squared else np.sqrt(others))
        scores[i] = np.sum(others[: num_tasks - n_byzantine - 2])
    return scores


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("n_byzantine", "distance"), [(0, "squared"), (1, "euclidean")])
def test_picks_an_inlier(seed, n_byzantine, distance):
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(5, 20)) * 0.1 + rng.normal(size=20)  # a cluster of five
    outlier = int(rng.integers(5))
    jac[outlier] = -20.0 * jac[outlier]
    method = krum(n_byzantine=n_byzantine, distance=distance)
    direction, weights, _ = weighting.aggregate(method, jnp.asarray(jac, jnp.float32))
    selected = int(np.argmax(weights))
    assert selected != outlier
    np.testing.assert_array_equal(weights, np.eye(5)[selected])
    np.testing.assert_allclose(direction, jac[selected], rtol=1e-6)


@pytest.mark.parametrize("case", ["random4", "random10", "conflicting", "scaled_1e10"])
@pytest.mark.parametrize("distance", ["squared", "euclidean"])
def test_matches_direct_computation(case, distance):
    jac = jacobian_bank()[case]
    method = krum(distance=distance)
    gram = jnp.asarray(jac) @ jnp.asarray(jac).T
    weights, _, metrics = jax.jit(method.update)(
        None, method.init(("a",) * len(jac)), key=None, gramian=gram
    )
    expected = reference_scores(jac, 0, squared=distance == "squared")
    largest = np.max(np.diagonal(jac.astype(np.float64) @ jac.T))
    unit = largest if distance == "squared" else np.sqrt(largest)
    np.testing.assert_allclose(metrics["scores"], expected / unit, rtol=1e-4)
    assert int(np.argmax(weights)) == int(np.argmin(expected))


def test_multi_krum_averages_the_best():
    jac = np.array([[1.0, 0.0], [1.1, 0.1], [0.9, -0.1], [0.0, 3.0], [-50.0, 40.0]])
    direction, weights, _ = weighting.aggregate(krum(n_selected=3), jnp.asarray(jac))
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(direction, jac[:3].mean(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["zero", "identical", "one_zero_row", "mixed_scales"])
def test_degenerate_banks_select_one_task(case):
    jac = jnp.asarray(jacobian_bank()[case])
    _, weights, _ = weighting.aggregate(krum(), jac)
    assert np.all(np.isfinite(weights)) and float(jnp.sum(weights)) == 1.0
    if case in ("zero", "identical"):  # ties go to the lowest index
        assert float(weights[0]) == 1.0


def test_too_few_tasks_and_bad_options():
    with pytest.raises(ValueError, match="at least n_byzantine \\+ 3 = 3 tasks, got 2"):
        weighting.aggregate(krum(), jnp.asarray(jacobian_bank()["random2"]))
    with pytest.raises(ValueError, match="n_selected=4 exceeds the 3 tasks"):
        weighting.aggregate(krum(n_selected=4), jnp.ones((3, 2)))
    for options, match in [
        ({"n_byzantine": -1}, "n_byzantine"),
        ({"n_selected": 0}, "n_selected"),
        ({"distance": "l1"}, "distance"),
    ]:
        with pytest.raises(ValueError, match=match):
            krum(**options)
