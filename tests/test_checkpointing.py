"""`Checkpointer`: exact round trips, the latest K kept, leaf checks naming shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax.checkpointing import Checkpointer, CheckpointError, compare_leaves, describe_leaves
from mtl_jax.train import TrainState


def _state(width: int = 4, step: int = 0) -> TrainState:
    params = {
        "shared": {"w": jnp.arange(3.0 * width).reshape(3, width) / 7},
        "tasks": {"a": {"b": jnp.full((2,), 0.1)}},
    }
    tx = optax.adam(1e-3)
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        batch_stats={"shared": {}, "tasks": {"a": {}}},
        opt_state=tx.init(params),
        weighting_state=(jnp.asarray([0.25, 0.75]), jax.random.PRNGKey(3)),
        rng=jax.random.PRNGKey(1),
    )


def _abstract(state):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def test_round_trip_is_exact_and_keeps_the_latest(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2) as checkpointer:
        for step in (1, 2, 3):
            checkpointer.save(step, _state(step=step), {"data_iterator": {"next_index": step}})
        assert checkpointer.all_steps() == [2, 3] and checkpointer.latest_step() == 3
        state, meta = checkpointer.restore(3, _abstract(_state()))
    assert meta == {"data_iterator": {"next_index": 3}}
    want = _state(step=3)
    assert jax.tree.structure(state) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(want), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_other_shapes_and_missing_leaves_are_named(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=1) as checkpointer:
        checkpointer.save(1, _state(width=4), {})
        with pytest.raises(CheckpointError) as error:
            checkpointer.restore(1, _abstract(_state(width=5)))
    message = str(error.value)
    assert f"checkpoint '{tmp_path / '1'}' does not fit the model" in message
    assert (
        "leaf 'params/shared/w': checkpoint has shape (3, 4) float32, model has shape (3, 5)"
        in (message)
    )


def test_compare_leaves_reports_missing_and_extra():
    saved = {"a": [[2], "float32"], "b": [[], "int32"]}
    expected = {"a": [[2], "float32"], "c": [[1], "float32"]}
    assert compare_leaves(saved, expected) == [
        "leaf 'c' of the model is missing from the checkpoint",
        "leaf 'b' is in the checkpoint but not in the model",
    ]
    assert describe_leaves({"x": jnp.zeros((2, 3), jnp.bfloat16)}) == {"x": [[2, 3], "bfloat16"]}
