"""`gls`: the weights are the gradient of the geometric mean of the losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting


def _geometric_mean(losses):
    return jnp.prod(losses) ** (1.0 / losses.shape[0])


@pytest.mark.parametrize("seed", range(5))
def test_weights_equal_gradient_of_geometric_mean(seed):
    rng = np.random.default_rng(seed)
    num_tasks = int(rng.integers(2, 8))
    losses = jnp.asarray(rng.uniform(0.05, 5.0, num_tasks), jnp.float32)
    method = weighting.gls()
    weights, _, metrics = method.update(
        losses, method.init(weighting.default_task_names(num_tasks)), key=None
    )
    np.testing.assert_allclose(weights, jax.grad(_geometric_mean)(losses), rtol=1e-5)
    geometric_mean = float(_geometric_mean(losses))
    np.testing.assert_allclose(metrics["geometric_mean"], geometric_mean, rtol=1e-5)
    # (Π L)^{1/T} / (T · L_t), and Euler's identity for a degree-one homogeneous function.
    np.testing.assert_allclose(weights, geometric_mean / (num_tasks * losses), rtol=1e-5)
    np.testing.assert_allclose(jnp.sum(weights * losses), geometric_mean, rtol=1e-5)


def test_weights_are_scale_invariant_weights_times_geometric_mean_over_t():
    losses = jnp.asarray([0.2, 1.5, 7.0])
    names = weighting.default_task_names(3)
    weights, _, metrics = weighting.gls().update(losses, weighting.gls().init(names), key=None)
    si = weighting.scale_invariant()
    inverse, _, _ = si.update(losses, si.init(names), key=None)
    np.testing.assert_allclose(weights, inverse * metrics["geometric_mean"] / 3, rtol=1e-5)


def test_direction_is_gradient_of_geometric_mean_loss():
    """Through `aggregate`: Σ w_t g_t is ∇ (Π L_t(x))^{1/T} for L_t = ‖x − a_t‖²/2."""
    targets = jnp.asarray([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0], [3.0, 1.0, -1.0]])
    x = jnp.asarray([0.5, 0.2, -0.3])

    def task_losses(x):
        return 0.5 * jnp.sum((x[None, :] - targets) ** 2, axis=1)

    jac = jax.jacobian(task_losses)(x)
    direction, _, _ = weighting.aggregate(weighting.gls(), jac, losses=task_losses(x))
    expected = jax.grad(lambda x: _geometric_mean(task_losses(x)))(x)
    np.testing.assert_allclose(direction, expected, rtol=1e-5)


def test_no_overflow_where_the_product_would():
    # Π L = 1e126 overflows float32, the log-space weights do not.
    losses = jnp.asarray([1e30, 1e31, 1e32, 1e33], jnp.float32)
    method = weighting.gls()
    weights, _, _ = method.update(losses, method.init(weighting.default_task_names(4)), key=None)
    log_gm = np.mean(np.log(np.asarray(losses, np.float64)))
    expected = np.exp(log_gm - np.log(np.asarray(losses, np.float64))) / 4
    np.testing.assert_allclose(weights, expected, rtol=1e-5)


@pytest.mark.parametrize("eps", [0.0, -1e-3, float("inf")])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        weighting.gls(eps=eps)
