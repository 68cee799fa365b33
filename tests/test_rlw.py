"""`rlw`: random weights on the simplex, reproducible from the key in the state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting


def _draws(method, num_tasks, steps, state=None):
    update = jax.jit(method.update)
    state = method.init(weighting.default_task_names(num_tasks)) if state is None else state
    out = []
    for _ in range(steps):
        weights, state, _ = update(jnp.ones(num_tasks), state)
        out.append(np.asarray(weights))
    return np.stack(out), state


def test_on_the_simplex_and_fresh_every_step():
    draws, _ = _draws(weighting.rlw(), 5, 20)
    assert np.all(draws > 0)
    np.testing.assert_allclose(draws.sum(axis=1), 1.0, rtol=1e-5)
    assert len({tuple(row) for row in draws}) == 20, "a draw repeated"


def test_same_key_same_weights():
    first, _ = _draws(weighting.rlw(seed=3), 4, 5)
    again, _ = _draws(weighting.rlw(seed=3), 4, 5)
    other, _ = _draws(weighting.rlw(seed=4), 4, 5)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_resuming_from_a_state_continues_the_sequence():
    method = weighting.rlw(seed=1)
    whole, _ = _draws(method, 3, 6)
    head, state = _draws(method, 3, 3)
    tail, _ = _draws(method, 3, 3, state=jax.tree.map(np.asarray, state))
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)


def test_weights_are_softmax_of_standard_normal():
    """Each weight is exchangeable (mean 1/T), and log-ratios are N(0, 2)."""
    method = weighting.rlw()
    states = jax.vmap(lambda k: weighting.RLWState(k))(
        jax.random.split(jax.random.PRNGKey(0), 4000)
    )
    weights, _, _ = jax.vmap(method.update, in_axes=(None, 0))(jnp.ones(3), states)
    np.testing.assert_allclose(np.mean(np.asarray(weights), axis=0), 1 / 3, atol=0.02)
    log_ratio = np.log(np.asarray(weights[:, 0])) - np.log(np.asarray(weights[:, 1]))
    np.testing.assert_allclose(np.var(log_ratio), 2.0, rtol=0.1)


@pytest.mark.parametrize("seed", [1.5, "0", True, None])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        weighting.rlw(seed=seed)
