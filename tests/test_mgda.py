"""`mgda`: the KKT conditions of the min-norm problem, on random and degenerate Gramians."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from tests.banks import bank_params, jacobian_bank


def _check_kkt(gram, w, tol):
    """(Gw)_t = wᵀGw where w_t > 0 and (Gw)_t ≥ wᵀGw elsewhere, relative to max diag."""
    gram = np.asarray(gram, np.float64)
    w = np.asarray(w, np.float64)
    scale = max(np.max(np.diagonal(gram)), 1e-300)
    gw = gram @ w
    value = w @ gw
    assert np.all(w >= 0) and abs(np.sum(w) - 1) < 1e-5
    assert np.all(gw >= value - tol * scale), (gw, value)
    support = w > 1e-6
    assert np.all(np.abs(gw[support] - value) <= tol * scale), (gw[support], value)


@pytest.mark.parametrize("seed", range(20))
def test_kkt_on_random_gramians(seed):
    rng = np.random.default_rng(seed)
    num_tasks = int(rng.integers(2, 12))
    rank = int(rng.integers(1, num_tasks + 3))
    jac = rng.normal(size=(num_tasks, rank)) @ rng.normal(size=(rank, 40))
    gram = jnp.asarray(jac @ jac.T, jnp.float32)
    result = weighting.min_norm_simplex(gram, tol=1e-6, max_iters=1000)
    assert int(result.iterations) < 1000, "did not converge"
    _check_kkt(gram, result.weights, tol=1e-5)


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_kkt_and_descent_on_bank(case):
    jac = jacobian_bank()[case].astype(np.float64)
    direction, w, _ = weighting.aggregate(
        weighting.mgda(normalization="none", tol=1e-6, max_iters=2000),
        jnp.asarray(jac, jnp.float32),
    )
    gram = jac @ jac.T
    _check_kkt(gram, w, tol=1e-4)
    # g_t · d ≥ ‖d‖²: no task gets worse to first order.
    d = np.asarray(direction, np.float64)
    scale = max(np.max(np.diagonal(gram)), 1e-300)
    assert np.all(jac @ d >= d @ d - 1e-4 * scale), case


def test_two_task_closed_form():
    g1, g2 = np.array([1.0, 0.0]), np.array([0.5, 2.0])
    # argmin_γ ‖γ g1 + (1 − γ) g2‖² = (g2 − g1)·g2 / ‖g1 − g2‖²
    gamma = (g2 - g1) @ g2 / np.sum((g1 - g2) ** 2)
    method = weighting.mgda(normalization="none")
    _, w, _ = weighting.aggregate(method, jnp.asarray([g1, g2], jnp.float32))
    np.testing.assert_allclose(w, [gamma, 1 - gamma], rtol=1e-5)


def test_normalizations_rescale_rows():
    jac = jnp.asarray([[3.0, 0.0], [0.0, 1.0]])
    losses = jnp.asarray([2.0, 0.5])
    # l2: unit rows e1, e2 → equal weights.
    _, w, _ = weighting.aggregate(weighting.mgda(normalization="l2"), jac)
    np.testing.assert_allclose(w, [0.5, 0.5], atol=1e-5)
    # loss: rows (1.5, 0) and (0, 2) → w ∝ (1/1.5², 1/2²).
    _, w, _ = weighting.aggregate(weighting.mgda(normalization="loss"), jac, losses=losses)
    expected = np.array([1 / 2.25, 1 / 4.0])
    np.testing.assert_allclose(w, expected / expected.sum(), atol=1e-5)
    # loss+ (the default): rows (0.5, 0) and (0, 2) → w ∝ (1/0.25, 1/4).
    _, w, _ = weighting.aggregate(weighting.mgda(), jac, losses=losses)
    np.testing.assert_allclose(w, np.array([4.0, 0.25]) / 4.25, atol=1e-5)
    with pytest.raises(ValueError, match="needs the task losses"):
        weighting.aggregate(weighting.mgda(normalization="loss+"), jac)
    with pytest.raises(ValueError, match="normalization must be one of"):
        weighting.mgda(normalization="l1")


def test_zero_gramian_gives_uniform_weights():
    result = weighting.min_norm_simplex(jnp.zeros((4, 4)))
    np.testing.assert_allclose(result.weights, 0.25)
    assert int(result.iterations) == 0


def test_scale_invariance():
    jac = jacobian_bank()["random4"]
    method = weighting.mgda(normalization="none")
    _, w1, _ = weighting.aggregate(method, jnp.asarray(jac))
    _, w2, _ = weighting.aggregate(method, jnp.asarray(jac * 1e-6))
    np.testing.assert_allclose(w1, w2, atol=1e-4)


def test_reports_solver_metrics_under_jit():
    gram = jnp.asarray(np.diag([1.0, 2.0, 3.0]), jnp.float32)
    method = weighting.mgda(normalization="none")
    weights, _, metrics = jax.jit(method.update)(
        jnp.ones(3), method.init(("a", "b", "c")), key=None, gramian=gram
    )
    assert int(metrics["solver_iterations"]) > 0
    assert float(metrics["solver_gap"]) <= 1e-5
    # Orthogonal rows, no normalisation: w ∝ 1 / ‖g_t‖².
    expected = 1 / np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(weights, expected / expected.sum(), atol=1e-4)


def _libmtl_parameter_mode_direction(jac, losses, normalization):
    """LibMTL's `MGDA.backward` with `rep_grad=False`, restated in float64 numpy.

    The rows are divided by their normalisers; the min-norm weights are found by its
    solver (the best pair's two-task closed form as the start, then Frank–Wolfe steps
    toward the projected point with an exact line search, stopping when the weights
    change by less than 1e-5 in L1, at most 250 steps); and the *normalised* rows are
    combined with the weights.
    """
    jac = np.asarray(jac, np.float64)
    norms = np.linalg.norm(jac, axis=1)
    normalizer = {
        "none": np.ones(len(jac)),
        "l2": norms,
        "loss": losses,
        "loss+": losses * norms,
    }[normalization]
    rows = jac / normalizer[:, None]
    gram = rows @ rows.T
    n = len(rows)

    def pair(v11, v12, v22):  # min over γ of ‖γ u + (1 − γ) v‖²: (γ, value)
        if v12 >= v11:
            return 0.999, v11
        if v12 >= v22:
            return 0.001, v22
        gamma = -(v12 - v22) / (v11 + v22 - 2 * v12)
        return gamma, v22 + gamma * (v12 - v22)

    best = min(
        (
            (i, j, *pair(gram[i, i], gram[i, j], gram[j, j]))
            for i in range(n)
            for j in range(i + 1, n)
        ),
        key=lambda item: item[3],
    )
    w = np.zeros(n)
    w[best[0]], w[best[1]] = best[2], 1 - best[2]

    def to_simplex(y):
        ordered = np.sort(y)[::-1]
        shift = (np.sum(y) - 1.0) / n
        total = 0.0
        for i in range(n - 1):
            total += ordered[i]
            candidate = (total - 1) / (i + 1.0)
            if candidate > ordered[i + 1]:
                shift = candidate
                break
        return np.maximum(y - shift, 0.0)

    def next_point(current, grad):
        projected = grad - np.sum(grad) / n
        neg, pos = projected < 0, projected > 0
        t1 = -current[neg] / projected[neg]
        t2 = (1.0 - current[pos]) / projected[pos]
        t = 1.0
        if np.any(t1 > 1e-7):
            t = np.min(t1[t1 > 1e-7])
        if np.any(t2 > 1e-7):
            t = min(t, np.min(t2[t2 > 1e-7]))
        return to_simplex(projected * t + current)

    if n >= 3:
        for _ in range(250):
            point = next_point(w, -gram @ w)
            gamma, _ = pair(w @ gram @ w, w @ gram @ point, point @ gram @ point)
            new = gamma * w + (1 - gamma) * point
            if np.sum(np.abs(new - w)) < 1e-5:
                break
            w = new
    return w @ rows


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("normalization", ["l2", "loss+"])
def test_normalized_matches_libmtl_parameter_mode(seed, normalization):
    rng = np.random.default_rng(seed)
    num_tasks = int(rng.integers(2, 6))
    jac = rng.normal(size=(num_tasks, 30)) * rng.uniform(0.1, 10.0, size=(num_tasks, 1))
    losses = rng.uniform(0.2, 3.0, num_tasks)
    method = weighting.mgda(normalization=normalization, apply_to="normalized", tol=1e-9)
    direction, _, _ = weighting.aggregate(
        method, jnp.asarray(jac, jnp.float32), losses=jnp.asarray(losses, jnp.float32)
    )
    expected = _libmtl_parameter_mode_direction(jac, losses, normalization)
    # LibMTL stops once its weights move by < 1e-5; both reach the same min-norm point.
    np.testing.assert_allclose(direction, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    # The raw convention is a different direction whenever the normalisers differ.
    raw, _, _ = weighting.aggregate(
        weighting.mgda(normalization=normalization, tol=1e-9),
        jnp.asarray(jac, jnp.float32),
        losses=jnp.asarray(losses, jnp.float32),
    )
    assert not np.allclose(raw, expected, rtol=1e-2)


def test_apply_to_is_validated():
    with pytest.raises(ValueError, match="apply_to must be one of"):
        weighting.mgda(apply_to="both")
