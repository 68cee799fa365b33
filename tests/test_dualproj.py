"""`dualproj`: torchjd's numbers, an exact QP reference, non-conflict on every bank."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._dualproj import dualproj
from tests.banks import bank_params, jacobian_bank
from tests.test_dual_cone import REG_EPS, brute_force_projection, reference_gramian


def reference_weights(jac: np.ndarray) -> np.ndarray:
    """DualProj weights in float64: argmin_{v ≥ 1/T} vᵀ(G/tr G + εI)v, by brute force."""
    return brute_force_projection(reference_gramian(jac), np.full(len(jac), 1.0 / len(jac)))


def test_torchjd_docstring_example():
    # torchjd's DualProj docstring: J = [[-4, 1, 1], [6, 1, 1]] -> [0.5563, 1.1109, 1.1109].
    jac = jnp.asarray([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    direction, _, _ = weighting.aggregate(dualproj(), jac)
    np.testing.assert_allclose(direction, [0.5563, 1.1109, 1.1109], atol=1e-4)


@pytest.mark.parametrize(
    "case", ["random2", "random4", "conflicting", "rank_deficient", "opposite"]
)
def test_matches_exact_qp(case):
    jac = jacobian_bank()[case]
    _, weights, _ = weighting.aggregate(dualproj(), jnp.asarray(jac))
    expected = reference_weights(jac)
    np.testing.assert_allclose(weights, expected, atol=2e-3 * np.abs(expected).max())


def test_closest_non_conflicting_direction():
    # g1 = (1, 0), g2 = (−2, 1): the mean (−0.5, 0.5) conflicts with g1; its projection
    # onto {x : x1 ≥ 0, −2 x1 + x2 ≥ 0} is (0, 0.5), i.e. weights (1, 0.5) up to the ridge.
    jac = jnp.asarray([[1.0, 0.0], [-2.0, 1.0]])
    direction, weights, _ = weighting.aggregate(dualproj(reg_eps=1e-6), jac)
    np.testing.assert_allclose(direction, [0.0, 0.5], atol=1e-4)
    np.testing.assert_allclose(weights, [1.0, 0.5], atol=1e-3)


def test_no_conflict_gives_the_mean():
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(4, 10))
    jac[:, 0] = 10.0  # a shared component dominates: the mean conflicts with no row
    _, weights, _ = weighting.aggregate(dualproj(), jnp.asarray(jac, jnp.float32))
    np.testing.assert_allclose(weights, np.full(4, 0.25), rtol=1e-6)


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_does_not_conflict_on_bank(case):
    """g_t · d ≥ −reg_eps · tr(G) · w_t, up to the solver tolerance (see the docstring)."""
    jac = jacobian_bank()[case]
    direction, weights, _ = weighting.aggregate(dualproj(norm_eps=0.0), jnp.asarray(jac))
    weights = np.asarray(weights, np.float64)
    direction = np.asarray(direction, np.float64)
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(direction))
    assert np.all(weights >= 1.0 / len(jac) - 1e-7)
    jac = jac.astype(np.float64)
    slack = 1e-5 * np.linalg.norm(jac, axis=1) * np.linalg.norm(direction)
    bound = -np.sum(jac**2) * (REG_EPS * weights + 1e-6 * weights.max()) - slack
    assert np.all(jac @ direction >= bound), case


def test_reports_solver_metrics_under_jit():
    jac = jnp.asarray([[1.0, 0.0], [-2.0, 1.0]])
    method = dualproj()
    _, _, metrics = jax.jit(method.update)(
        None, method.init(("a", "b")), key=None, gramian=jac @ jac.T
    )
    assert int(metrics["solver_iterations"]) == 1
    assert float(metrics["solver_residual"]) < 1e-6


@pytest.mark.parametrize(
    ("options", "match"),
    [({"reduction": "none"}, "reduction"), ({"reg_eps": -1.0}, "reg_eps"), ({"tol": -1}, "tol")],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        dualproj(**options)


def test_uniform_pref_vector_is_the_default_exactly():
    jac = jnp.asarray(jacobian_bank()["conflicting"])
    _, default, _ = weighting.aggregate(dualproj(), jac)
    _, uniform, _ = weighting.aggregate(dualproj(pref_vector=[1 / 3] * 3), jac)
    np.testing.assert_array_equal(uniform, default)


@pytest.mark.parametrize("pref", [(1.0, 0.0, 0.0), (0.2, 0.5, 0.3), (2.0, 1.0, 4.0)])
def test_pref_vector_projects_the_weighted_sum(pref):
    """w = argmin_{v ≥ p} vᵀĜv: the projection of Σ_t p_t g_t onto the dual cone."""
    jac = jacobian_bank()["conflicting"]
    _, weights, _ = weighting.aggregate(dualproj(pref_vector=pref), jnp.asarray(jac))
    expected = brute_force_projection(reference_gramian(jac), np.asarray(pref))
    np.testing.assert_allclose(weights, expected, atol=2e-3 * np.abs(expected).max())


def test_bad_pref_vector():
    with pytest.raises(ValueError, match="dualproj: pref_vector has 3 entries but there are 2"):
        dualproj(pref_vector=(1.0, 1.0, 1.0)).init(("a", "b"))
    with pytest.raises(ValueError, match="dualproj: pref_vector"):
        dualproj(pref_vector=(1.0, -1.0))
