"""`trimmed_mean`: robust to an outlier row; invalid trims fail early and clearly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._trimmed_mean import trimmed_mean
from tests.banks import jacobian_bank


def _aggregate(method, jac):
    return jax.jit(lambda j: weighting.aggregate(method, j))(jnp.asarray(jac))


@pytest.mark.parametrize("scale", [1e3, 1e30, -1e30])
def test_one_outlier_row_cannot_move_the_direction_out_of_the_inliers(scale):
    rng = np.random.default_rng(0)
    inliers = rng.normal(size=(4, 25)).astype(np.float32)
    outlier = scale * rng.normal(size=(1, 25)).astype(np.float32)
    jac = np.concatenate([inliers[:2], outlier, inliers[2:]])
    direction, _, _ = _aggregate(trimmed_mean(trim_number=1), jac)
    d = np.asarray(direction)
    assert np.all(d >= inliers.min(0) - 1e-6) and np.all(d <= inliers.max(0) + 1e-6)
    # Independent check: drop the extremes of every column of the sorted matrix.
    np.testing.assert_allclose(d, np.sort(jac, axis=0)[1:-1].mean(0), rtol=1e-6)


@pytest.mark.parametrize("num_tasks, trim_number", [(3, 1), (5, 2), (8, 3), (40, 1), (40, 19)])
def test_equals_the_mean_of_the_sorted_middle_with_ties(num_tasks, trim_number):
    """Integer values make ties common: exactly `b` values leave from each end anyway."""
    rng = np.random.default_rng(num_tasks + trim_number)
    jac = rng.integers(-2, 3, size=(num_tasks, 300)).astype(np.float32)
    rows = {
        "a": jnp.asarray(jac[:, :100].reshape(num_tasks, 10, 10)),
        "b": jnp.asarray(jac[:, 100:]),
    }
    method = trimmed_mean(trim_number=trim_number)
    state = method.init(weighting.default_task_names(num_tasks), None)
    direction, _, _ = jax.jit(method.update)(None, state, key=None, rows=rows)
    want = np.sort(jac, axis=0)[trim_number : num_tasks - trim_number].mean(0)
    got = np.concatenate([np.asarray(direction["a"]).ravel(), np.asarray(direction["b"])])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_trim_zero_is_the_mean():
    jac = jacobian_bank()["random4"]
    direction, weights, _ = _aggregate(trimmed_mean(trim_number=0), jac)
    assert weights is None
    np.testing.assert_allclose(direction, jac.mean(0), rtol=1e-6, atol=1e-7)


def test_invalid_trim_is_rejected_at_init_and_update():
    method = trimmed_mean(trim_number=2)
    row = jax.ShapeDtypeStruct((3,), jnp.float32)
    with pytest.raises(ValueError, match=r"trim_number=2 removes 4 of the 4 .* at least 5 tasks"):
        method.init(weighting.default_task_names(4), row)
    state = method.init(weighting.default_task_names(5), row)
    with pytest.raises(ValueError, match="needs at least 5 tasks"):
        method.update(None, state, key=None, rows=jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="needs at least 3 tasks"):
        weighting.aggregate(trimmed_mean(), jnp.ones((2, 3)))


@pytest.mark.parametrize("trim_number", [-1, 1.0, True, "1"])
def test_rejects_bad_trim_number(trim_number):
    with pytest.raises(ValueError, match="trim_number must be an integer"):
        trimmed_mean(trim_number=trim_number)
