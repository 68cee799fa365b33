"""`excess_mtl`: weights stay on the simplex and finite; tasks far from optimum gain."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._excess_mtl import excess_mtl
from tests.banks import bank_params, jacobian_bank


def _init(method, jac):
    names = weighting.default_task_names(jac.shape[0])
    return method.init(names, jax.ShapeDtypeStruct(jac.shape[1:], jnp.float32))


def _check_on_simplex(state, metrics, num_tasks):
    simplex = np.asarray(jax.nn.softmax(state.log_weights), np.float64)
    assert np.all(np.isfinite(simplex)) and np.all(simplex >= 0)
    assert abs(simplex.sum() - 1) < 1e-6
    np.testing.assert_allclose(metrics["weights"], num_tasks * simplex, rtol=1e-5)


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_weights_stay_on_the_simplex_and_finite_on_bank(case):
    jac = jnp.asarray(jacobian_bank()[case])
    method = excess_mtl(robust_step_size=1.0)  # large steps stress the update
    update = jax.jit(method.update)
    state = _init(method, jac)
    growth = jnp.linspace(0.5, 2.0, jac.shape[0])[:, None]
    for step in range(4):
        # Rows whose scales drift apart between updates, as gradients do.
        direction, state, metrics = update(None, state, key=None, rows=jac * growth**step)
        assert np.all(np.isfinite(direction)), case
        _check_on_simplex(state, metrics, jac.shape[0])


def test_first_update_is_equal_weighting():
    jac = jacobian_bank()["random4"]
    direction, weights, state = weighting.aggregate(excess_mtl(), jnp.asarray(jac))
    assert weights is None
    np.testing.assert_allclose(direction, jac.sum(0), rtol=1e-6)
    assert int(state.step) == 1


def test_matches_the_reference_rule():
    """An independent NumPy transcription of the authors' update, four steps."""
    rng = np.random.default_rng(0)
    batches = rng.normal(size=(4, 3, 6)) * np.array([1.0, 5.0, 0.2])[:, None]
    method = excess_mtl(robust_step_size=0.5)
    update = jax.jit(method.update)
    state = _init(method, batches[0])
    acc, loss_weight, initial = np.zeros((3, 6)), np.ones(3), None
    for g in batches:
        direction, state, metrics = update(None, state, key=None, rows=jnp.asarray(g, jnp.float32))
        acc = acc + g**2
        risk = np.sum(g**2 / np.sqrt(acc + 1e-7), axis=1)
        if initial is None:
            initial = risk
        else:
            loss_weight = loss_weight * np.exp(0.5 * risk / initial)
            loss_weight = loss_weight / loss_weight.sum() * 3
        np.testing.assert_allclose(metrics["weights"], loss_weight, rtol=1e-5)
        np.testing.assert_allclose(direction, loss_weight @ g, rtol=1e-5, atol=1e-6)


def test_task_far_from_its_optimum_gains_weight():
    """Task 0's gradient stays put (far from optimum); task 1's decays (converging)."""
    rng = np.random.default_rng(1)
    base = jnp.asarray(rng.normal(size=(2, 10)), jnp.float32)
    method = excess_mtl(robust_step_size=0.1)
    update = jax.jit(method.update)
    state = _init(method, base)
    for step in range(30):
        decay = jnp.asarray([[1.0], [0.8**step]])
        _, state, metrics = update(None, state, key=None, rows=base * decay)
    weights = np.asarray(metrics["weights"])
    assert weights[0] > 1.05 > 0.95 > weights[1], weights
    assert metrics["excess_risk"][0] > metrics["excess_risk"][1]


def test_zero_first_gradient_is_finite():
    jac = jnp.asarray(jacobian_bank()["one_zero_row"])
    method = excess_mtl()
    update = jax.jit(method.update)
    state = _init(method, jac)
    _, state, _ = update(None, state, key=None, rows=jac)
    direction, state, metrics = update(
        None, state, key=None, rows=jac + 1.0
    )  # the zero task wakes up
    assert np.all(np.isfinite(direction))
    assert float(metrics["excess_risk"][2]) == 0.0
    _check_on_simplex(state, metrics, 3)


@pytest.mark.parametrize("step_size", [0.0, -1.0, float("inf"), "0.1", True])
def test_rejects_bad_step_size(step_size):
    with pytest.raises(ValueError, match="robust_step_size must be a finite number > 0"):
        excess_mtl(robust_step_size=step_size)
