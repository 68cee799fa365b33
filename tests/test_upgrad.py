"""`upgrad`: torchjd's numbers, an exact QP reference, non-conflict on every bank."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._dual_cone import normalize_and_regularize
from mtl_jax.weighting._upgrad import upgrad
from tests.banks import bank_params, jacobian_bank
from tests.test_dual_cone import REG_EPS, brute_force_projection, reference_gramian


def reference_weights(jac: np.ndarray, reg_eps: float = REG_EPS) -> np.ndarray:
    """UPGrad weights in float64: Σ_t argmin_{v ≥ e_t/T} vᵀ(G/tr G + εI)v, by brute force."""
    gram = reference_gramian(jac, reg_eps)
    eye = np.eye(len(jac)) / len(jac)
    return sum(brute_force_projection(gram, eye[t]) for t in range(len(jac)))


def test_torchjd_docstring_example():
    # torchjd's UPGrad docstring: J = [[-4, 1, 1], [6, 1, 1]] -> [0.2929, 1.9004, 1.9004].
    jac = jnp.asarray([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    direction, _, _ = weighting.aggregate(upgrad(), jac)
    np.testing.assert_allclose(direction, [0.2929, 1.9004, 1.9004], atol=1e-4)


@pytest.mark.parametrize("case", ["random2", "random4", "conflicting", "rank_deficient"])
def test_matches_exact_qp(case):
    jac = jacobian_bank()[case]
    _, weights, _ = weighting.aggregate(upgrad(), jnp.asarray(jac))
    expected = reference_weights(jac)
    np.testing.assert_allclose(weights, expected, atol=2e-3 * np.abs(expected).max())


def test_no_conflict_gives_the_mean():
    rng = np.random.default_rng(0)
    jac = jnp.asarray(np.abs(rng.normal(size=(4, 10))), jnp.float32)
    direction, weights, _ = weighting.aggregate(upgrad(), jac)
    np.testing.assert_allclose(weights, np.full(4, 0.25), rtol=1e-6)
    np.testing.assert_allclose(direction, jnp.mean(jac, axis=0), rtol=1e-5)
    _, weights, _ = weighting.aggregate(upgrad(reduction="sum"), jac)
    np.testing.assert_allclose(weights, np.ones(4), rtol=1e-6)


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_does_not_conflict_on_bank(case):
    """g_t · d ≥ −reg_eps · tr(G) · w_t, up to the solver tolerance (see the docstring)."""
    jac = jacobian_bank()[case]
    # norm_eps=0: the 1e-10 and 1e-5 banks would otherwise count as zero gradients.
    direction, weights, _ = weighting.aggregate(upgrad(norm_eps=0.0), jnp.asarray(jac))
    weights = np.asarray(weights, np.float64)
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(direction))
    assert np.all(weights >= 0)
    jac = jac.astype(np.float64)
    trace = np.sum(jac**2)
    # Products from the float32 direction carry round-off of order 1e-6 · ‖g_t‖‖d‖.
    slack = 1e-5 * np.linalg.norm(jac, axis=1) * np.linalg.norm(np.asarray(direction, np.float64))
    bound = -trace * (REG_EPS * weights + 1e-6 * weights.max()) - slack
    assert np.all(jac @ np.asarray(direction, np.float64) >= bound), case


def test_tiny_gradients_are_not_projected_by_default():
    # torchjd's absolute norm_eps: tr(G) < 1e-4 counts as zero, and w is the mean.
    jac = jnp.asarray(jacobian_bank()["conflicting"] * 1e-3)
    _, weights, _ = weighting.aggregate(upgrad(), jac)
    np.testing.assert_allclose(weights, np.full(3, 1 / 3), rtol=1e-6)
    _, weights, _ = weighting.aggregate(upgrad(norm_eps=0.0), jac)
    assert not np.allclose(weights, 1 / 3)


def test_scale_invariance_without_norm_eps():
    jac = jacobian_bank()["conflicting"]
    method = upgrad(norm_eps=0.0)
    _, w1, _ = weighting.aggregate(method, jnp.asarray(jac))
    _, w2, _ = weighting.aggregate(method, jnp.asarray(jac * 1e6))
    np.testing.assert_allclose(w1, w2, rtol=1e-4)


def test_reports_solver_metrics_under_jit():
    jac = jnp.asarray(jacobian_bank()["conflicting"])
    method = upgrad()
    gram = jac @ jac.T
    weights, _, metrics = jax.jit(method.update)(
        None, method.init(("a", "b", "c")), key=None, gramian=gram
    )
    assert int(metrics["solver_iterations"]) > 0  # the rows conflict
    assert float(metrics["solver_residual"]) < 1e-5
    # KKT of the regularised problem for the summed weights: Ĝw ≥ 0.
    reg = np.asarray(normalize_and_regularize(gram, norm_eps=1e-4, reg_eps=REG_EPS))
    assert np.all(reg @ np.asarray(weights) >= -1e-6)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"reduction": "max"}, "reduction"),
        ({"reg_eps": 0.0}, "reg_eps"),
        ({"norm_eps": -1.0}, "norm_eps"),
        ({"tol": 0.0}, "tol"),
        ({"max_iters": 0}, "max_iters"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        upgrad(**options)


def test_uniform_pref_vector_is_the_default_exactly():
    jac = jnp.asarray(jacobian_bank()["conflicting"])
    _, default, _ = weighting.aggregate(upgrad(), jac)
    _, uniform, _ = weighting.aggregate(upgrad(pref_vector=(1 / 3,) * 3), jac)
    np.testing.assert_array_equal(uniform, default)


@pytest.mark.parametrize("pref", [(1.0, 0.0, 0.0), (0.0, 0.0, 2.0), (0.2, 0.5, 0.3)])
def test_pref_vector_weights_the_projected_rows(pref):
    """w = Σ_t p_t v⁽ᵗ⁾ with v⁽ᵗ⁾ = argmin_{v ≥ e_t} vᵀĜv: the p-weighted sum of π(g_t)."""
    jac = jacobian_bank()["conflicting"]
    _, weights, _ = weighting.aggregate(upgrad(pref_vector=pref), jnp.asarray(jac))
    gram = reference_gramian(jac)
    projections = [brute_force_projection(gram, np.eye(3)[t]) for t in range(3)]
    expected = sum(p * v for p, v in zip(pref, projections, strict=True))
    # One-hot on task k (the first two cases): w = v⁽ᵏ⁾, the projection of g_k alone.
    np.testing.assert_allclose(weights, expected, atol=2e-3 * np.abs(expected).max())


def test_normalize_rows_is_upgrad_of_the_unit_rows():
    jac = jacobian_bank()["conflicting"].astype(np.float32)
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    direction, weights, _ = weighting.aggregate(upgrad(normalize_rows=True), jnp.asarray(jac))
    expected, unit_weights, _ = weighting.aggregate(upgrad(), jnp.asarray(units))
    np.testing.assert_allclose(direction, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        weights, np.asarray(unit_weights) / np.linalg.norm(jac, axis=1), rtol=1e-4
    )


def test_normalize_rows_ignores_the_scale_of_one_task():
    jac = jacobian_bank()["conflicting"].astype(np.float32)
    scaled = jac.copy()
    scaled[1] *= 1e4
    method = upgrad(normalize_rows=True)
    d1, _, _ = weighting.aggregate(method, jnp.asarray(jac))
    d2, _, _ = weighting.aggregate(method, jnp.asarray(scaled))
    np.testing.assert_allclose(d1, d2, rtol=1e-4, atol=1e-5)
    # Without it, the scaled task dominates.
    d3, _, _ = weighting.aggregate(upgrad(), jnp.asarray(scaled))
    assert not np.allclose(d1, d3, rtol=1e-2)


def test_normalize_rows_keeps_zero_rows_at_zero_weight():
    jac = jnp.asarray(jacobian_bank()["one_zero_row"])
    _, weights, _ = weighting.aggregate(upgrad(normalize_rows=True), jac)
    zero = np.linalg.norm(np.asarray(jac), axis=1) == 0
    assert np.all(np.isfinite(weights)) and np.all(np.asarray(weights)[zero] == 0)


def test_pref_vector_length_is_checked_at_init():
    with pytest.raises(ValueError, match="upgrad: pref_vector has 2 entries but there are 3"):
        upgrad(pref_vector=(0.5, 0.5)).init(("a", "b", "c"))


@pytest.mark.parametrize(
    "pref", [(-1.0, 1.0), (float("nan"), 1.0), (float("inf"), 1.0), (0.0, 0.0), (), "ab"]
)
def test_bad_pref_vector(pref):
    with pytest.raises(ValueError, match="upgrad: pref_vector"):
        upgrad(pref_vector=pref)


def test_bad_normalize_rows():
    with pytest.raises(ValueError, match="normalize_rows"):
        upgrad(normalize_rows=1)
