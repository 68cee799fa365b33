"""`fixed`: user weights, validated."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting


def test_weights_follow_sorted_task_order():
    method = weighting.fixed(weights={"right": 0.5, "left": 2.0})
    weights, _, _ = method.update(jnp.ones(2), method.init(("left", "right")), key=None)
    np.testing.assert_array_equal(weights, [2.0, 0.5])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"a": -1.0}, "finite and >= 0"),
        ({"a": math.nan}, "finite and >= 0"),
        ({"a": math.inf}, "finite and >= 0"),
        ({"a": "1"}, "finite and >= 0"),
        ({"a": 0.0, "b": 0.0}, "at least one weight"),
        ({}, "non-empty mapping"),
    ],
)
def test_rejects_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        weighting.fixed(weights=weights)


def test_rejects_task_mismatch_showing_both_sets():
    method = weighting.fixed(weights={"left": 1.0, "rigth": 1.0})
    with pytest.raises(ValueError, match=r"\['left', 'rigth'\].*\['left', 'right'\]"):
        method.init(("left", "right"))
