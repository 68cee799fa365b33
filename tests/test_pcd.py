"""`pcd`: defining properties and a float64 NumPy restatement of torchjd's rule."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting


def reference(J, tau=0.02, eps=1e-8, primary=0):
    """One first call (debiased EMA = ‖g‖²), solved by enumerating active sets."""
    J = np.asarray(J, np.float64)
    scaled = J / np.sqrt((J**2).sum(1) + eps)[:, None]
    others = [t for t in range(len(J)) if t != primary]
    gp = scaled[primary]
    best = None
    for size in range(len(others) + 1):
        for subset in itertools.combinations(others, size):
            A = scaled[list(subset)]
            if size:
                rhs = tau * (A**2).sum(1) - A @ gp
                mu = np.linalg.lstsq(A @ A.T, rhs, rcond=None)[0]
                if np.any(mu < -1e-9):
                    continue
                d = gp + mu @ A
            else:
                d = gp
            if all(scaled[j] @ d >= tau * scaled[j] @ scaled[j] - 1e-9 for j in others):
                cost = np.sum((d - gp) ** 2)
                if best is None or cost < best[0]:
                    best = (cost, d)
    d = gp if best is None else best[1]
    return d * np.linalg.norm(J[primary]) / np.linalg.norm(d)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("primary", [0, 2])
def test_matches_reference_and_secondaries_gain(seed, primary):
    J = np.random.default_rng(seed).normal(size=(3, 6)).astype(np.float32)
    direction, _, _ = weighting.aggregate(weighting.pcd(tau=0.3, primary=primary), jnp.asarray(J))
    direction = np.asarray(direction)
    np.testing.assert_allclose(direction, reference(J, 0.3, primary=primary), atol=1e-4)
    for j in range(3):
        if j != primary:
            assert J[j] @ direction >= -1e-5


def test_primary_unconstrained_when_no_conflict():
    rng = np.random.default_rng(0)
    v = rng.normal(size=5)
    J = jnp.asarray(np.outer([1.0, 2.0, 0.5], v), jnp.float32)
    direction, weights, _ = weighting.aggregate(weighting.pcd(), J)
    assert np.all(np.asarray(weights) >= 0) and np.asarray(weights).sum() > 0
    np.testing.assert_allclose(np.asarray(direction), np.asarray(J[0]), rtol=1e-5, atol=1e-6)


def test_primary_may_lose():
    J = jnp.asarray([[1.0, 0.0], [-1.0, 0.1]])
    direction, _, _ = weighting.aggregate(weighting.pcd(tau=0.5), J)
    assert float(J[0] @ direction) < 0 < float(J[1] @ direction)


def test_infeasible_and_zero_primary():
    J = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    direction, _, _ = weighting.aggregate(weighting.pcd(tau=0.5), J)
    np.testing.assert_allclose(np.asarray(direction), [1.0, 0.0], atol=1e-6)
    J = jnp.asarray([[0.0, 0.0], [0.0, 1.0]])
    _, weights, _ = weighting.aggregate(weighting.pcd(), J)
    np.testing.assert_array_equal(np.asarray(weights), [0.0, 0.0])


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"tau": 1.5}, "tau"),
        ({"tau": (0.1, -1.0)}, "tau"),
        ({"beta": 1.0}, "beta"),
        ({"eps": -1.0}, "eps"),
        ({"primary": -1}, "primary"),
        ({"tol": 0.0}, "tol"),
    ],
)
def test_invalid_options(kwargs, option):
    with pytest.raises(ValueError, match=option):
        weighting.pcd(**kwargs)


def test_sizes_checked_at_init():
    with pytest.raises(ValueError, match="primary"):
        weighting.pcd(primary=3).init(("a", "b"))
    with pytest.raises(ValueError, match="tau"):
        weighting.pcd(tau=(0.1, 0.2)).init(("a", "b"))
