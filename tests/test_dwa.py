"""`dwa`: T·softmax of epoch-mean loss ratios, ones for the first two epochs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting


def _run(method, loss_rows):
    """Weights of each step for the given [steps, T] losses, starting from `init`."""
    update = jax.jit(method.update)
    state = method.init(weighting.default_task_names(len(loss_rows[0])))
    out = []
    for losses in loss_rows:
        weights, state, _ = update(jnp.asarray(losses, jnp.float32), state, key=None)
        out.append(np.asarray(weights))
    return np.stack(out), state


def test_first_two_epochs_give_ones():
    rng = np.random.default_rng(0)
    weights, state = _run(weighting.dwa(steps_per_epoch=3), rng.uniform(0.1, 5.0, (6, 4)))
    np.testing.assert_array_equal(weights, np.ones((6, 4), np.float32))
    assert int(state.step) == 6


def test_third_epoch_by_hand():
    # Epoch means: epoch 0 = (2, 2), epoch 1 = (1, 2) ⇒ ratios (0.5, 1).
    losses = [[1.0, 2.0], [3.0, 2.0], [1.0, 1.0], [1.0, 3.0], [9.0, 9.0]]
    weights, state = _run(weighting.dwa(steps_per_epoch=2, temperature=2.0), losses)
    e = math.exp(0.5 / 2.0 - 1.0 / 2.0)  # exp(r_0/τ − r_1/τ)
    np.testing.assert_allclose(weights[4], [2 * e / (1 + e), 2 / (1 + e)], rtol=1e-6)
    np.testing.assert_allclose(state.epoch_means, [[2.0, 2.0], [1.0, 2.0]])
    np.testing.assert_allclose(state.epoch_loss_sum, [9.0, 9.0])


@pytest.mark.parametrize("seed", range(3))
def test_equal_ratios_give_equal_weights_summing_to_t(seed):
    rng = np.random.default_rng(seed)
    num_tasks, steps_per_epoch = 5, 4
    # Every task's loss falls by the same factor per epoch, from different scales.
    scales = rng.uniform(0.01, 100.0, num_tasks)
    rows = [scales * 0.7**epoch for epoch in range(4) for _ in range(steps_per_epoch)]
    weights, _ = _run(weighting.dwa(steps_per_epoch=steps_per_epoch), rows)
    np.testing.assert_allclose(weights[2 * steps_per_epoch :], 1.0, rtol=1e-5)
    rows = rng.uniform(0.1, 5.0, (4 * steps_per_epoch, num_tasks))
    weights, _ = _run(weighting.dwa(steps_per_epoch=steps_per_epoch), rows)
    np.testing.assert_allclose(weights.sum(axis=1), num_tasks, rtol=1e-5)
    assert np.all(weights > 0)


def test_slower_task_gets_more_weight():
    # Task 0's loss stalls, task 1's halves each epoch.
    rows = [[1.0, 1.0], [1.0, 0.5], [1.0, 0.25]]
    weights, _ = _run(weighting.dwa(steps_per_epoch=1), rows + [[1.0, 0.1]])
    assert weights[3, 0] > 1.0 > weights[3, 1]


def test_zero_epoch_mean_ratio_is_one():
    rows = [[0.0, 1.0], [0.0, 1.0], [5.0, 1.0]]
    method = weighting.dwa(steps_per_epoch=1)
    _, state = _run(method, rows[:2])
    _, _, metrics = method.update(jnp.asarray(rows[2]), state, key=None)
    np.testing.assert_allclose(metrics["loss_ratio"], [1.0, 1.0])


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"steps_per_epoch": 2.5}, "steps_per_epoch"),
        ({"steps_per_epoch": 10, "temperature": 0.0}, "temperature"),
        ({"steps_per_epoch": 10, "temperature": float("nan")}, "temperature"),
    ],
)
def test_bad_options(options, name):
    with pytest.raises(ValueError, match=name):
        weighting.dwa(**options)


def test_steps_per_epoch_is_required():
    with pytest.raises(TypeError, match="steps_per_epoch"):
        weighting.dwa()
