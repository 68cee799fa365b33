"""The dual-cone projection QP: exact against brute force, KKT at scale, degenerate inputs."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.weighting._dual_cone import normalize_and_regularize, project_onto_dual_cone

# The dual-cone methods' default regulariser (`reg_eps`), shared by their reference tests.
REG_EPS = 1e-4


def reference_gramian(jac: np.ndarray, reg_eps: float = REG_EPS) -> np.ndarray:
    """`G / tr G + εI` in float64, the Gramian that upgrad and dualproj project with."""
    jac = np.asarray(jac, np.float64)
    gram = jac @ jac.T
    return gram / np.trace(gram) + reg_eps * np.eye(len(jac))


def brute_force_projection(gram: np.ndarray, u: np.ndarray) -> np.ndarray:
    """`argmin_{v ≥ u} vᵀGv` for positive-definite G by enumerating active sets (float64).

    For each set A of constraints held at equality (`v_A = u_A`), the free part solves
    `G_FF v_F = −G_FA u_A`; the optimum is the candidate that is primal feasible
    (`v_F ≥ u_F`) and dual feasible (`(Gv)_A ≥ 0`). Exponential in T: small cases only.
    """
    gram = np.asarray(gram, np.float64)
    u = np.asarray(u, np.float64)
    num_tasks = u.shape[0]
    scale = np.abs(gram).max()
    for active in itertools.product([False, True], repeat=num_tasks):
        active = np.asarray(active)
        free = ~active
        v = u.copy()
        if free.any():
            v[free] = np.linalg.solve(
                gram[np.ix_(free, free)], -gram[np.ix_(free, active)] @ u[active]
            )
        gv = gram @ v
        if np.all(v[free] >= u[free] - 1e-12) and np.all(gv[active] >= -1e-12 * scale):
            return v
    raise AssertionError("no KKT point found; is the Gramian positive definite?")


def random_gramian(rng, num_tasks, rank, dim=20):
    jac = rng.normal(size=(num_tasks, rank)) @ rng.normal(size=(rank, dim))
    return jac @ jac.T


def check_kkt(gram, u, v, tol):
    """v ≥ u, Ĝv ≥ 0 and (v − u) ⊙ Ĝv = 0 up to `tol` (Ĝ: G over its largest diagonal)."""
    gram = np.asarray(gram, np.float64) / np.max(np.diagonal(gram))
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    unit = np.abs(u).max(axis=-1, keepdims=True)
    gv = v @ gram
    assert np.all(v - u >= -tol * unit)
    assert np.all(gv >= -tol * unit), gv.min()
    assert np.all(np.abs((v - u) * gv) <= tol * unit * np.maximum(1.0, np.abs(v))), (v - u) * gv


def stacked_preferences(num_tasks):
    """One projection per row (UPGrad) and the mean (DualProj): [T + 1, T]."""
    return np.vstack([np.eye(num_tasks), np.full((1, num_tasks), 1.0 / num_tasks)])


@pytest.mark.parametrize("num_tasks", [4, 6])
def test_matches_brute_force(num_tasks):
    rng = np.random.default_rng(num_tasks)
    u = stacked_preferences(num_tasks)
    for rank in [1, 2, num_tasks - 1, num_tasks, num_tasks + 3]:
        gram = random_gramian(rng, num_tasks, rank)
        gram = np.asarray(
            normalize_and_regularize(jnp.asarray(gram, jnp.float32), norm_eps=1e-4, reg_eps=1e-4)
        )
        result = project_onto_dual_cone(jnp.asarray(gram), jnp.asarray(u, jnp.float32))
        for k in range(u.shape[0]):
            expected = brute_force_projection(gram, u[k])
            # float32 against float64 at condition number ~1e4 (the ridge): ~1e-3 relative.
            np.testing.assert_allclose(
                result.weights[k], expected, atol=2e-3 * max(1.0, np.abs(expected).max())
            )
        assert float(result.residual) < 1e-5


def test_kkt_for_many_tasks():
    num_tasks = 40
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(num_tasks, 60))
    jac[num_tasks // 2 :] *= -0.5  # half the tasks oppose the others
    gram = normalize_and_regularize(jnp.asarray(jac @ jac.T, jnp.float32), norm_eps=0, reg_eps=1e-4)
    u = jnp.eye(num_tasks)
    result = project_onto_dual_cone(gram, u)
    assert int(result.iterations) < 2 * num_tasks
    assert float(result.residual) < 1e-5
    check_kkt(gram, u, result.weights, tol=1e-5)


def test_no_conflict_is_identity_without_iterations():
    rng = np.random.default_rng(0)
    jac = np.abs(rng.normal(size=(4, 8)))  # all inner products positive
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    u = jnp.asarray(rng.random((5, 4)), jnp.float32)
    result = project_onto_dual_cone(gram, u)
    np.testing.assert_array_equal(result.weights, u)
    assert int(result.iterations) == 0 and float(result.residual) == 0.0


def test_two_opposite_gradients_project_to_zero():
    # g and −g: the dual cone is the hyperplane g⊥, and g projects to 0, i.e. v1 = v2.
    gram = jnp.asarray([[1.0, -1.0], [-1.0, 1.0]]) + 1e-4 * jnp.eye(2)
    result = project_onto_dual_cone(gram, jnp.asarray([1.0, 0.0]))
    expected = brute_force_projection(np.asarray(gram), np.array([1.0, 0.0]))
    np.testing.assert_allclose(result.weights, expected, atol=1e-3)
    assert abs(float(result.weights[0] - result.weights[1])) < 1e-3


@pytest.mark.parametrize(
    "gram",
    [
        np.zeros((4, 4)),
        np.ones((4, 4)),
        np.array([[1.0, -1.0, 0, 0], [-1.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1.0]]),
        random_gramian(np.random.default_rng(1), 4, 2),
    ],
    ids=["zero", "identical", "opposite_and_zero", "rank2"],
)
def test_finite_on_singular_gramians_without_ridge(gram):
    u = stacked_preferences(4)
    result = project_onto_dual_cone(jnp.asarray(gram, jnp.float32), jnp.asarray(u, jnp.float32))
    weights = np.asarray(result.weights)
    assert np.all(np.isfinite(weights)) and np.isfinite(float(result.residual))
    assert np.all(weights >= u - 1e-6)


def test_iteration_cap_is_respected():
    rng = np.random.default_rng(3)
    jac = rng.normal(size=(40, 60))
    gram = normalize_and_regularize(jnp.asarray(jac @ jac.T), norm_eps=0, reg_eps=1e-4)
    result = project_onto_dual_cone(gram, jnp.eye(40), max_iters=2)
    assert int(result.iterations) <= 2
    assert np.all(np.isfinite(result.weights))
    assert float(result.residual) > 1e-5  # reported, not hidden


def test_scale_invariance():
    rng = np.random.default_rng(4)
    gram = random_gramian(rng, 4, 4) + 1e-3 * np.eye(4)
    u = jnp.asarray(stacked_preferences(4), jnp.float32)
    small = project_onto_dual_cone(jnp.asarray(gram * 1e-12, jnp.float32), u)
    large = project_onto_dual_cone(jnp.asarray(gram * 1e12, jnp.float32), u)
    np.testing.assert_allclose(small.weights, large.weights, rtol=1e-4, atol=1e-6)


def test_normalize_and_regularize():
    gram = jnp.asarray([[4.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(
        normalize_and_regularize(gram, norm_eps=1e-4, reg_eps=0.1),
        np.array([[0.8, 0.2], [0.2, 0.2]]) + 0.1 * np.eye(2),
        rtol=1e-6,
    )
    # Below norm_eps (absolute, like torchjd) the gradients count as zero.
    np.testing.assert_allclose(
        normalize_and_regularize(gram * 1e-6, norm_eps=1e-4, reg_eps=0.1), 0.1 * np.eye(2)
    )
    zero = normalize_and_regularize(jnp.zeros((2, 2)), norm_eps=0.0, reg_eps=0.1)
    np.testing.assert_allclose(zero, 0.1 * np.eye(2))
