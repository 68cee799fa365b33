"""`imtl`: IMTL-G on the IMTL-L-scaled gradients, with weights on the original gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._imtl import imtl
from mtl_jax.weighting._imtl_g import imtl_g
from mtl_jax.weighting._imtl_l import imtl_l
from tests.banks import jacobian_bank

aggregate = jax.jit(weighting.aggregate, static_argnums=0)
METHOD = imtl(learning_rate=0.05)


def test_is_imtl_g_on_the_scaled_gradients():
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(3, 12)) + 0.5 * rng.normal(size=(1, 12))
    losses = jnp.asarray([0.2, 1.0, 5.0])
    state = METHOD.init(("a", "b", "c"))
    scale = np.array([-1.0, 0.3, 2.0])
    state = state._replace(loss_scale=jnp.asarray(scale, jnp.float32))
    direction, weights, _ = aggregate(METHOD, jnp.asarray(jac), losses=losses, state=state)
    # IMTL-G applied to the explicitly scaled rows e^{s_t} g_t ...
    scaled = jac * np.exp(scale)[:, None]
    _, alpha, _ = aggregate(imtl_g(), jnp.asarray(scaled, jnp.float32))
    # ... gives the same update, with weights α_t e^{s_t} on the original rows.
    np.testing.assert_allclose(weights, np.asarray(alpha) * np.exp(scale), rtol=1e-4)
    np.testing.assert_allclose(np.sum(alpha), 1.0, rtol=1e-5)
    # Both properties: equal projections on the unit gradients ...
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    projections = units @ np.asarray(direction, np.float64)
    np.testing.assert_allclose(projections, projections[0], rtol=1e-3)


def test_loss_scales_learn_like_imtl_l():
    # ... and the loss scales follow IMTL-L's updates exactly, equalising e^s L.
    losses = jnp.asarray([0.05, 1.0, 20.0])
    jac = jnp.asarray(jacobian_bank()["conflicting"])
    gram = jac @ jac.T
    hybrid, loss_only = METHOD, imtl_l(learning_rate=0.05)
    hybrid_update, loss_update = jax.jit(hybrid.update), jax.jit(loss_only.update)
    state_h, state_l = hybrid.init(("a", "b", "c")), loss_only.init(("a", "b", "c"))
    for _ in range(3000):
        _, state_h, metrics = hybrid_update(losses, state_h, key=None, gramian=gram)
        _, state_l, _ = loss_update(losses, state_l, key=None)
    np.testing.assert_allclose(state_h.loss_scale, state_l.loss_scale, rtol=1e-6)
    np.testing.assert_allclose(np.exp(state_h.loss_scale) * losses, 1.0, atol=1e-2)
    assert float(metrics["solver_residual"]) < 1e-4


def test_needs_losses():
    with pytest.raises(ValueError, match="needs the task losses"):
        weighting.aggregate(METHOD, jnp.ones((2, 3)))


@pytest.mark.parametrize("case", ["zero", "opposite", "mixed_scales", "more_tasks_than_params"])
def test_degenerate_inputs_finite(case):
    jac = jnp.asarray(jacobian_bank()[case])
    losses = jnp.linspace(0.5, 2.0, jac.shape[0])
    direction, weights, _ = aggregate(METHOD, jac, losses=losses)
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(direction))
