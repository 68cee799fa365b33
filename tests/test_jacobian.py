"""The per-task gradient engine against plain `jax.grad`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import jacobian, row_math
from mtl_jax.losses import masked_mean
from tests.helpers import multi_mnist_setup, relative_error


def _task_loss(model, tasks, variables, batch, name, train=True):
    """Loss of one task as a function of all parameters, the plain way."""

    def loss(params):
        preds, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, batch["image"], train=train
        )
        values, mask = tasks[name].loss(
            preds[name], batch["targets"][name], jnp.ones(batch["image"].shape[0], bool)
        )
        return masked_mean(values, mask)

    return loss


@pytest.mark.parametrize("trunk", ["lenet", "small_resnet_pooled"])
def test_jacobian_rows_equal_per_task_grad(trunk):
    tasks, model, variables, batch = multi_mnist_setup(trunk)

    # Both sides jitted: one compile each, not op-by-op dispatch through a ResNet.
    @jax.jit
    def engine(params):
        pullbacks = jacobian.forward_with_pullbacks(
            model, tasks, params, variables["batch_stats"], batch
        )
        return jacobian.shared_jacobian(pullbacks), pullbacks.head_grads, pullbacks.losses

    rows, head_grads, losses = engine(variables["params"])
    for index, name in enumerate(model.task_names):
        loss = _task_loss(model, tasks, variables, batch, name)
        value, expected = jax.jit(jax.value_and_grad(loss))(variables["params"])
        row = jax.tree.map(lambda leaf, i=index: leaf[i], rows)
        for got, want in zip(
            jax.tree.leaves(row), jax.tree.leaves(expected["shared"]), strict=True
        ):
            assert relative_error(got, want) <= 1e-5, name
        # Each head gets exactly its own task's gradient.
        for got, want in zip(
            jax.tree.leaves(head_grads[name]), jax.tree.leaves(expected["tasks"][name]), strict=True
        ):
            assert relative_error(got, want) <= 1e-5, name
        np.testing.assert_allclose(losses[index], value, rtol=1e-6)


def test_rep_grads_are_gradients_wrt_representation():
    tasks, model, variables, batch = multi_mnist_setup()
    params, stats = variables["params"], variables["batch_stats"]
    pullbacks = jacobian.forward_with_pullbacks(model, tasks, params, stats, batch)
    rep, _ = model.apply_shared(params["shared"], stats["shared"], batch["image"], train=True)
    valid = jnp.ones(rep.shape[0], bool)
    for index, name in enumerate(model.task_names):

        def head_loss(r, name=name):
            pred, _ = model.apply_head(
                name, params["tasks"][name], stats["tasks"][name], r, train=True
            )
            return masked_mean(*tasks[name].loss(pred, batch["targets"][name], valid))

        assert relative_error(pullbacks.rep_grads[index], jax.grad(head_loss)(rep)) <= 1e-5


def test_gramian_and_combine_match_dense_matrix():
    tasks, model, variables, batch = multi_mnist_setup()
    pullbacks = jacobian.forward_with_pullbacks(
        model, tasks, variables["params"], variables["batch_stats"], batch
    )
    rows = jacobian.shared_jacobian(pullbacks)
    dense = np.concatenate(
        [np.asarray(leaf).reshape(leaf.shape[0], -1) for leaf in jax.tree.leaves(rows)], axis=1
    ).astype(np.float64)
    np.testing.assert_allclose(row_math.gramian(rows), dense @ dense.T, rtol=1e-5, atol=1e-8)
    weights = jnp.asarray([0.2, 1.5, 0.7])
    combined = row_math.combine(weights, rows)
    flat = np.concatenate([np.asarray(leaf).ravel() for leaf in jax.tree.leaves(combined)])
    assert relative_error(flat, np.asarray(weights, np.float64) @ dense) <= 1e-5
    # The representation route gives the same weighted shared gradient.
    via_rep = jacobian.shared_gradient_from_rep(pullbacks, weights)
    flat_rep = np.concatenate([np.asarray(leaf).ravel() for leaf in jax.tree.leaves(via_rep)])
    assert relative_error(flat_rep, flat) <= 1e-5


def test_jacobian_strategies_agree():
    tasks, model, variables, batch = multi_mnist_setup()
    pullbacks = jacobian.forward_with_pullbacks(
        model, tasks, variables["params"], variables["batch_stats"], batch
    )
    unrolled = jacobian.shared_jacobian(pullbacks, strategy="unrolled")
    vmapped = jacobian.shared_jacobian(pullbacks, strategy="vmap")
    for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(vmapped), strict=True):
        assert relative_error(a, b) <= 1e-5
    with pytest.raises(ValueError, match="strategy must be one of"):
        jacobian.shared_jacobian(pullbacks, strategy="loop")


@pytest.mark.parametrize(
    ("strategy", "chunk_size"), [("unrolled", 1), ("unrolled", 2), ("vmap", 2)]
)
def test_task_chunks_give_the_same_rows(strategy, chunk_size):
    tasks, model, variables, batch = multi_mnist_setup()
    pullbacks = jacobian.forward_with_pullbacks(
        model, tasks, variables["params"], variables["batch_stats"], batch
    )
    whole = jacobian.shared_jacobian(pullbacks)
    # T = 3 tasks: chunks of 2 need one padded zero task, which must be dropped.
    chunked = jacobian.shared_jacobian(pullbacks, strategy=strategy, chunk_size=chunk_size)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked), strict=True):
        assert a.shape == b.shape
        assert relative_error(b, a) <= 1e-5
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        jacobian.shared_jacobian(pullbacks, chunk_size=0)


def _jacobian_temp_bytes(num_tasks: int, chunk_size: int | None) -> int:
    """Temporary bytes XLA assigns to `shared_jacobian` of a trunk with large activations.

    The trunk has few parameters ([C] per layer) and [N, C] activations, so each task's
    backward pass needs about 4 MiB per layer of temporaries, and the rows are small.
    """
    n, c, layers = 4096, 256, 4

    def trunk(params, x):
        for scale in params:
            x = jnp.tanh(x * scale)
        return jnp.mean(x, axis=0)

    def rows(params, x, cotangents):
        _, pullback = jax.vjp(lambda p: trunk(p, x), params)
        pullbacks = jacobian.TaskPullbacks(
            losses=jnp.zeros(num_tasks),
            preds={},
            rep_grads=cotangents,
            head_grads={},
            trunk_pullback=lambda z: pullback(z)[0],
            batch_stats={},
        )
        return jacobian.shared_jacobian(pullbacks, chunk_size=chunk_size)

    args = (
        [jax.ShapeDtypeStruct((c,), jnp.float32)] * layers,
        jax.ShapeDtypeStruct((n, c), jnp.float32),
        jax.ShapeDtypeStruct((num_tasks, c), jnp.float32),
    )
    compiled = jax.jit(rows).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_task_chunks_bound_the_backward_memory():
    # One task's backward pass holds [4096, 256] float32 temporaries (4 MiB each). With
    # chunks of 1, going from 2 to 8 tasks must not add six tasks' worth of them: XLA
    # has to finish one chunk before it starts the next.
    activation = 4096 * 256 * 4
    growth = _jacobian_temp_bytes(8, 1) - _jacobian_temp_bytes(2, 1)
    assert growth < activation, f"temporaries grew by {growth / 2**20:.1f} MiB"
    # Without chunking, the compiler is free to overlap them (and on CPU it does).
    assert _jacobian_temp_bytes(8, None) > _jacobian_temp_bytes(8, 1)


def test_reduce_tasks_equals_the_axis_zero_reduction():
    leaf = jax.random.normal(jax.random.key(0), (5, 3, 4))
    np.testing.assert_allclose(
        row_math.reduce_tasks(jnp.add, leaf), jnp.sum(leaf, axis=0), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_array_equal(row_math.reduce_tasks(jnp.maximum, leaf), leaf.max(axis=0))
    np.testing.assert_array_equal(row_math.reduce_tasks(jnp.add, leaf[:1]), leaf[0])
