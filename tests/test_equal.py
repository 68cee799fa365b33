"""`equal`: constant weights."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting


@pytest.mark.parametrize(("reduction", "value"), [("sum", 1.0), ("mean", 0.25)])
def test_constant_weights(reduction, value):
    method = weighting.equal(reduction=reduction)
    state = method.init(weighting.default_task_names(4))
    for losses in ([1.0, 2.0, 3.0, 4.0], [1e-8, 1e8, 0.0, 5.0]):
        weights, state, _ = method.update(jnp.asarray(losses), state, key=None)
        np.testing.assert_array_equal(weights, np.full(4, value, np.float32))


def test_direction_is_sum_of_rows():
    jac = jnp.asarray([[1.0, 2.0], [3.0, -1.0]])
    direction, _, _ = weighting.aggregate(weighting.equal(), jac, losses=jnp.ones(2))
    np.testing.assert_allclose(direction, [4.0, 1.0])


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        weighting.equal(reduction="max")
