"""`moco`: tracking converges on a fixed batch, λ stays on the simplex and reaches MGDA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._moco import _project_simplex, moco
from tests.banks import bank_params, jacobian_bank


def _init(method, jac):
    names = weighting.default_task_names(jac.shape[0])
    return method.init(names, jax.ShapeDtypeStruct(jac.shape[1:], jnp.float32))


def _run(method, jac, losses, steps):
    """`steps` updates on the same rows inside one jitted scan; returns (direction, state)."""

    @jax.jit
    def run(state):
        def body(state, _):
            direction, state, _ = method.update(losses, state, key=None, rows=jac)
            return state, direction

        state, directions = jax.lax.scan(body, state, None, length=steps)
        return directions[-1], state

    return run(_init(method, jac))


@pytest.mark.parametrize("normalization", ["none", "loss"])
def test_tracked_gradients_converge_on_a_fixed_batch(normalization):
    rng = np.random.default_rng(0)
    jac = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
    losses = jnp.asarray([0.5, 1.0, 3.0])
    _, state = _run(moco(normalization=normalization), jac, losses, 600)
    # Π_k (1 − 0.5/√k) over 600 updates ≈ e^-24.
    target = np.asarray(jac)
    if normalization == "loss":  # LibMTL's tracked quantity
        target = (
            target / np.linalg.norm(target, axis=1, keepdims=True) * np.asarray(losses)[:, None]
        )
    np.testing.assert_allclose(state.tracked, target, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 600


def test_weights_reach_the_min_norm_weights_on_a_fixed_batch():
    jac = jnp.asarray([[1.0, 0.2, 0.0], [-0.5, 1.0, 0.1], [0.3, -0.4, 1.0]], jnp.float32)
    direction, state = _run(moco(), jac, None, 3000)
    expected = weighting.min_norm_simplex(jnp.asarray(jac @ jac.T), tol=1e-7).weights
    np.testing.assert_allclose(state.weights, expected, atol=1e-3)
    np.testing.assert_allclose(direction, expected @ jac, atol=1e-3)


def test_softmax_variant_matches_libmtl_rule():
    """An independent NumPy transcription of LibMTL's update, three steps."""
    rng = np.random.default_rng(1)
    batches = rng.normal(size=(3, 2, 5)).astype(np.float32)
    losses = np.array([0.7, 1.9], np.float32)
    method = moco(normalization="loss", simplex_step="softmax", rho=0.1)
    update = jax.jit(method.update)
    state = _init(method, batches[0])
    y, lam = np.zeros((2, 5)), np.full(2, 0.5)
    for k, g in enumerate(batches.astype(np.float64), start=1):
        direction, state, metrics = update(
            jnp.asarray(losses), state, key=None, rows=jnp.asarray(g)
        )
        g = g / np.linalg.norm(g, axis=1, keepdims=True) * losses[:, None]
        y = y - 0.5 / np.sqrt(k) * (y - g)
        logits = lam - 0.1 / np.sqrt(k) * (y @ y.T + 0.1 * np.eye(2)) @ lam
        lam = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(metrics["weights"], lam, rtol=1e-5)
        np.testing.assert_allclose(direction, lam @ y, rtol=1e-5, atol=1e-7)


def test_projection_is_the_nearest_simplex_point():
    rng = np.random.default_rng(2)
    project = jax.jit(_project_simplex)
    for scale in (1e-3, 1.0, 1e3, 1e20):
        v = (scale * rng.normal(size=5)).astype(np.float32)
        w = np.asarray(project(jnp.asarray(v)), np.float64)
        assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-6, (scale, w)
        # No point of the simplex (vertices and random points) is closer to v.
        others = np.concatenate([np.eye(5), rng.dirichlet(np.ones(5), size=2000)])
        best = np.min(np.linalg.norm(others - v, axis=1))
        assert np.linalg.norm(w - v) <= best * (1 + 1e-6), scale
    np.testing.assert_allclose(project(jnp.asarray([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5], atol=1e-7)
    np.testing.assert_allclose(project(jnp.asarray([-1e30, 0.0])), [0.0, 1.0])


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_finite_and_on_the_simplex_on_bank(case):
    jac = jnp.asarray(jacobian_bank()[case])
    losses = jnp.linspace(0.5, 2.0, jac.shape[0])
    for method in (moco(), moco(normalization="loss", simplex_step="softmax")):
        direction, state = _run(method, jac, losses, 3)
        assert np.all(np.isfinite(direction)), case
        w = np.asarray(state.weights)
        assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-5, (case, w)


def test_options_are_validated():
    with pytest.raises(ValueError, match='normalization="loss" needs the task losses'):
        weighting.aggregate(moco(normalization="loss"), jnp.ones((2, 3)))
    bad = [
        {"beta": 0.0},
        {"beta": 2.0},
        {"gamma": 0.0},
        {"rho": -1.0},
        {"beta_sigma": float("inf")},
        {"normalization": "l2"},
        {"simplex_step": "mirror"},
    ]
    for options in bad:
        with pytest.raises(ValueError, match="moco: "):
            moco(**options)
