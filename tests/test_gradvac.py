"""`gradvac`: corrected cosines hit the EMA target; Gramian-only form equals Alg. 1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import weighting
from mtl_jax.weighting._gradvac import gradvac

KEY = jax.random.PRNGKey(0)


def _reference_two_tasks(g, targets, beta):
    """Alg. 1 of Wang et al. on explicit rows, for two tasks (orders are then fixed)."""
    surgered = [g[0].copy(), g[1].copy()]
    targets = targets.copy()
    for i, j in ((0, 1), (1, 0)):
        cos = surgered[i] @ g[j] / (np.linalg.norm(surgered[i]) * np.linalg.norm(g[j]))
        if cos < targets[i, j]:
            t = targets[i, j]
            a = (
                np.linalg.norm(surgered[i])
                * (t * np.sqrt(1 - cos**2) - cos * np.sqrt(1 - t**2))
                / (np.linalg.norm(g[j]) * np.sqrt(1 - t**2))
            )
            surgered[i] = surgered[i] + a * g[j]
        targets[i, j] = (1 - beta) * targets[i, j] + beta * cos
    return surgered, targets


def test_matches_explicit_algorithm_and_reaches_target():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(2, 8))
    g[1] = -0.3 * g[0] + 0.2 * g[1]  # conflicting
    targets = np.array([[0.0, 0.4], [0.3, 0.0]])
    method = gradvac()
    state = method.init(("a", "b"))._replace(targets=jnp.asarray(targets, jnp.float32))
    direction, weights, new_state = weighting.aggregate(
        method, jnp.asarray(g, jnp.float32), losses=jnp.ones(2), state=state, key=KEY
    )
    surgered, want_targets = _reference_two_tasks(g, targets, 0.5)
    np.testing.assert_allclose(direction, surgered[0] + surgered[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_state.targets, want_targets, rtol=1e-4, atol=1e-6)
    # The property: after the correction, cos(g'_i, g_j) equals the (old) target.
    cos = surgered[0] @ g[1] / (np.linalg.norm(surgered[0]) * np.linalg.norm(g[1]))
    np.testing.assert_allclose(cos, 0.4, rtol=1e-6)


def test_no_conflict_below_targets_leaves_gradients():
    g = jnp.asarray([[1.0, 0.2], [0.8, 0.4]])
    direction, weights, _ = weighting.aggregate(gradvac(), g, losses=jnp.ones(2), key=KEY)
    np.testing.assert_allclose(weights, [1.0, 1.0])
    np.testing.assert_allclose(direction, g.sum(0), rtol=1e-6)


def test_same_key_same_result_and_scale_free():
    rng = np.random.default_rng(1)
    g = jnp.asarray(rng.normal(size=(5, 12)), jnp.float32)
    _, w1, s1 = weighting.aggregate(gradvac(), g, losses=jnp.ones(5), key=KEY)
    _, w2, s2 = weighting.aggregate(gradvac(), g * 1e6, losses=jnp.ones(5), key=KEY)
    np.testing.assert_allclose(w1, w2, rtol=1e-4)
    np.testing.assert_allclose(s1.targets, s2.targets, rtol=1e-4, atol=1e-6)
