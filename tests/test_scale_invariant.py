"""`scale_invariant`: w = 1/L, so rescaling a task leaves the shared gradient unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from tests.banks import jacobian_bank

# Loss vectors at the edges of float32 use: zero, tiny, huge and mixed.


@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, 1e4])
@pytest.mark.parametrize("case", ["random4", "conflicting", "rank_deficient"])
def test_shared_gradient_invariant_to_loss_scale(case, scale):
    jac = jnp.asarray(jacobian_bank()[case])
    losses = jnp.linspace(0.3, 2.5, jac.shape[0])
    method = weighting.scale_invariant()
    direction, _, _ = weighting.aggregate(method, jac, losses=losses)
    # Task 1's loss c·L_1 has gradient c·g_1.
    factor = jnp.ones(jac.shape[0]).at[1].set(scale)
    scaled, _, _ = weighting.aggregate(method, jac * factor[:, None], losses=losses * factor)
    np.testing.assert_allclose(scaled, direction, rtol=2e-5, atol=1e-6)


def test_weights_are_gradient_of_sum_of_log_losses():
    losses = jnp.asarray([0.2, 1.0, 3.5, 40.0])
    method = weighting.scale_invariant()
    weights, _, _ = method.update(losses, method.init(weighting.default_task_names(4)), key=None)
    expected = jax.grad(lambda x: jnp.sum(jnp.log(x)))(losses)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_zero_loss_gets_inverse_eps():
    method = weighting.scale_invariant(eps=1e-6)
    weights, _, _ = method.update(jnp.asarray([0.0, 2.0]), method.init(("a", "b")), key=None)
    np.testing.assert_allclose(weights, [1e6, 0.5], rtol=1e-6)


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), "small"])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        weighting.scale_invariant(eps=eps)
