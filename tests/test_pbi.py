"""`pbi`: the PBI scalarisation's weights, its solutions on a convex front, its options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting

NAMES2 = ("a", "b")
NAMES3 = ("a", "b", "c")
# L_t = ‖x − a_t‖²: the Pareto set is the segment x = (1 − s, s), s ∈ [0, 1], where
# L = (2s², 2(1 − s)²).
TARGETS = jnp.asarray([[1.0, 0.0], [0.0, 1.0]])


def toy_losses(x):
    return jnp.sum((x[None, :] - TARGETS) ** 2, axis=1)


def pbi_objective(losses, pref, ideal, penalty):
    """g = d1 + θ d2, restated from Zhang & Li (2007), Sec. II-C."""
    r_hat = pref / jnp.linalg.norm(pref)
    shifted = losses - ideal
    d1 = shifted @ r_hat
    d2 = jnp.linalg.norm(shifted - d1 * r_hat)
    return d1 + penalty * d2


def solve(pref, penalty, steps=20_000, lr=0.02):
    """Gradient descent on x with the pbi weights; the step decays as 1/(1 + i/20) so that
    the chatter across the ray (where the weights jump by 2θ) dies out."""
    method = weighting.pbi(pref_vector=pref, penalty=penalty)
    state = method.init(NAMES2)

    def body(x, i):
        losses, vjp = jax.vjp(toy_losses, x)
        weights, _, _ = method.update(losses, state, key=None)
        (grad,) = vjp(weights)
        return x - lr / (1.0 + i / 20.0) * grad, None

    x, _ = jax.jit(lambda x0: jax.lax.scan(body, x0, jnp.arange(steps)))(jnp.asarray([2.0, -1.0]))
    return np.asarray(x), np.asarray(toy_losses(x))


def distance_from_ray(losses, pref):
    r_hat = np.asarray(pref) / np.linalg.norm(pref)
    return np.linalg.norm(losses - (losses @ r_hat) * r_hat) / np.linalg.norm(losses)


@pytest.mark.parametrize("pref", [(1.0, 1.0), (1.0, 2.0), (3.0, 1.0)])
def test_solution_lies_on_the_preference_ray(pref):
    x, losses = solve(pref, penalty=5.0)
    assert distance_from_ray(losses, pref) < 1e-3, (x, losses)
    # On the segment, L2 / L1 = ((1 − s) / s)² = r2 / r1 gives s = 1 / (1 + √(r2 / r1)).
    s = 1.0 / (1.0 + np.sqrt(pref[1] / pref[0]))
    np.testing.assert_allclose(x, [1.0 - s, s], atol=1e-3)


def test_preferences_pick_different_points_and_the_penalty_matters():
    points = [solve(pref, penalty=5.0)[0] for pref in [(1.0, 2.0), (1.0, 1.0), (3.0, 1.0)]]
    # Ordered along the front: r is a direction in loss space, so a larger r_1 ends where
    # L_1 is larger, x further from task 1's target (1, 0).
    assert points[0][1] < points[1][1] - 0.05 and points[1][1] < points[2][1] - 0.05, points
    # Without the penalty the weights are the constant r̂: the weighted-sum solution,
    # (2/3, 1/3) for r = (1, 2), far from the ray.
    x, losses = solve((1.0, 2.0), penalty=0.0, steps=2000, lr=0.02)
    assert distance_from_ray(losses, (1.0, 2.0)) > 0.5, (x, losses)


@pytest.mark.parametrize(
    ("losses", "pref", "ideal", "penalty"),
    [
        ([0.3, 2.0, 1.1], None, None, 5.0),
        ([0.3, 2.0, 1.1], (1.0, 0.0, 2.0), (0.1, -0.5, 0.0), 2.5),
        ([4.0, 0.1, 0.7], (0.2, 0.3, 0.5), None, 0.0),
        ([1e-3, 5e3, 2.0], (1.0, 1.0, 3.0), (0.0, 1.0, 0.5), 10.0),
    ],
)
def test_weights_are_the_gradient_of_the_objective(losses, pref, ideal, penalty):
    losses = jnp.asarray(losses, jnp.float32)
    method = weighting.pbi(pref_vector=pref, ideal=ideal, penalty=penalty)
    weights, _, metrics = jax.jit(method.update)(losses, method.init(NAMES3), key=None)
    pref_arr = jnp.ones(3) if pref is None else jnp.asarray(pref, jnp.float32)
    ideal_arr = jnp.zeros(3) if ideal is None else jnp.asarray(ideal, jnp.float32)
    expected = jax.grad(pbi_objective)(losses, pref_arr, ideal_arr, penalty)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    g = float(pbi_objective(losses, pref_arr, ideal_arr, penalty))
    np.testing.assert_allclose(metrics["d1"] + penalty * metrics["d2"], g, rtol=1e-5)


def test_weights_are_constants_of_the_losses():
    """No gradient flows from the weights back into the losses (a stop-gradient)."""
    method = weighting.pbi()
    state = method.init(NAMES3)

    def total(losses):
        return jnp.sum(method.update(losses, state, key=None)[0])

    np.testing.assert_array_equal(jax.grad(total)(jnp.asarray([0.3, 2.0, 1.1])), 0.0)


@pytest.mark.parametrize(
    ("losses", "pref", "ideal"),
    [
        ([1.0, 1.0, 1.0], None, None),
        ([0.0, 0.0, 0.0], None, None),
        ([2.0, 4.0, 6.0], (1.0, 2.0, 3.0), None),
        ([1.5, 2.5, 3.5], (1.0, 1.0, 1.0), (0.5, 1.5, 2.5)),
        ([1e10, 1e10, 1e10], None, None),
        ([0.0, 3.0, 0.0], (0.0, 1.0, 0.0), None),
    ],
)
def test_on_the_ray_the_subgradient_is_zero_and_finite(losses, pref, ideal):
    method = weighting.pbi(pref_vector=pref, ideal=ideal)
    weights, _, metrics = method.update(
        jnp.asarray(losses, jnp.float32), method.init(NAMES3), key=None
    )
    r = np.ones(3) if pref is None else np.asarray(pref)
    assert np.all(np.isfinite(weights))
    np.testing.assert_allclose(weights, r / np.linalg.norm(r), rtol=1e-6)
    assert float(metrics["d2"]) == 0.0


def test_weights_stay_finite_and_bounded_on_extreme_losses():
    method = weighting.pbi(penalty=5.0)
    for losses in ([1e-30, 1e30, 0.0], [1e38, 0.0, 0.0], [1e-38, 2e-38, 0.0]):
        weights, _, metrics = method.update(
            jnp.asarray(losses, jnp.float32), method.init(NAMES3), key=None
        )
        assert np.all(np.isfinite(weights)) and np.all(np.abs(weights) <= 6.0 + 1e-5), losses
        assert np.all(np.isfinite(jnp.stack([metrics["d1"], metrics["d2"]]))), losses


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pref_vector": (1.0, -1.0, 1.0)}, "pref_vector"),
        ({"pref_vector": (0.0, 0.0, 0.0)}, "pref_vector"),
        ({"pref_vector": (1.0, float("nan"), 1.0)}, "pref_vector"),
        ({"pref_vector": ()}, "pref_vector"),
        ({"ideal": (0.0, float("inf"), 0.0)}, "ideal"),
        ({"ideal": ("0", 0.0, 0.0)}, "ideal"),
        ({"penalty": -1.0}, "penalty"),
        ({"penalty": float("nan")}, "penalty"),
        ({"penalty": float("inf")}, "penalty"),
        ({"penalty": True}, "penalty"),
    ],
)
def test_invalid_options_raise(options, message):
    with pytest.raises(ValueError, match=f"pbi: {message}"):
        weighting.pbi(**options)


@pytest.mark.parametrize("option", ["pref_vector", "ideal"])
def test_wrong_length_raises_at_init_naming_the_task_count(option):
    method = weighting.pbi(**{option: (1.0, 1.0)})
    with pytest.raises(ValueError, match=f"pbi: {option} has 2 entries but there are 3 tasks"):
        method.init(NAMES3)
    with pytest.raises(ValueError, match="3 tasks"):
        method.update(jnp.ones(3), weighting.PBIState(), key=None)


def test_builds_by_name_with_options():
    method = weighting.create("pbi", penalty=2.0, pref_vector=[1, 3])
    weights, _, _ = method.update(jnp.asarray([1.0, 3.0]), method.init(NAMES2), key=None)
    np.testing.assert_allclose(weights, np.asarray([1.0, 3.0]) / np.sqrt(10.0), rtol=1e-6)
    with pytest.raises(ValueError, match="did you mean 'penalty'"):
        weighting.create("pbi", penalti=2.0)
