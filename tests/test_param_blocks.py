"""Parameter blocks and the block Gramians of the train step (`mtl_jax.param_blocks`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import jacobian, param_blocks, row_math, weighting
from mtl_jax.train import create_train_state, make_train_step, step_keys
from tests.banks import bank_params, jacobian_bank
from tests.helpers import grad_recorder, multi_mnist_setup, relative_error

KEY = jax.random.PRNGKey(0)


class _OutOfOrderTrunk(nn.Module):
    """Call order differs from name order; a BatchNorm follows the last layer of weights."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4, name="z_first")(x)
        x = nn.Dense(3, name="a_last")(x)
        return nn.BatchNorm(use_running_average=True, name="norm")(x)


def _trunk_tree():
    x = jnp.ones((2, 5))
    variables = _OutOfOrderTrunk().init(jax.random.PRNGKey(0), x)
    return variables, x


def test_layer_tensor_and_whole_blockings():
    variables, _ = _trunk_tree()
    params = variables["params"]
    paths = param_blocks.leaf_paths(params)
    # Flattening sorts names: a_last, norm, z_first (bias before kernel / scale).
    assert paths == [
        ("a_last", "bias"),
        ("a_last", "kernel"),
        ("norm", "bias"),
        ("norm", "scale"),
        ("z_first", "bias"),
        ("z_first", "kernel"),
    ]
    assert param_blocks.assign(params, "whole") == ((0,) * 6, 1)
    assert param_blocks.assign(params, "tensor") == (tuple(range(6)), 6)
    assert param_blocks.assign(params, "layer") == ((0, 0, 1, 1, 2, 2), 3)
    for blocking in ("whole", "tensor", "layer"):
        assert param_blocks.count(params, blocking) == param_blocks.assign(params, blocking)[1]
    assert param_blocks.count(params, "last_layer") == 2


def test_last_layer_comes_from_the_call_order_not_the_names():
    variables, x = _trunk_tree()
    order = param_blocks.call_order(lambda v, x: _OutOfOrderTrunk().apply(v, x), variables, x)
    assert order == ((), ("z_first",), ("a_last",), ("norm",))
    last = param_blocks.last_layer(variables["params"], order)
    # The BatchNorm is called after it but owns no kernel.
    assert last == ("a_last",)
    ids, num = param_blocks.assign(variables["params"], "last_layer", last=last)
    assert (ids, num) == ((1, 1, 0, 0, 0, 0), 2)


def test_bad_blockings_are_named():
    variables, _ = _trunk_tree()
    with pytest.raises(ValueError, match="blocks must be one of"):
        param_blocks.assign(variables["params"], "rows")
    with pytest.raises(ValueError, match="needs the path of the last layer"):
        param_blocks.assign(variables["params"], "last_layer")
    with pytest.raises(ValueError, match=r"no parameter under \['missing'\]"):
        param_blocks.assign(variables["params"], "last_layer", last=("missing",))
    with pytest.raises(ValueError, match="owns a kernel"):
        param_blocks.last_layer(variables["params"], [("norm",)])


def test_block_gramians_sum_to_the_gramian_and_combine_per_block():
    rng = np.random.default_rng(0)
    rows = {
        "a": jnp.asarray(rng.normal(size=(3, 4, 2)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(3, 5)), jnp.float32),
        "c": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
    }
    leaf_blocks = (1, 0, 1)  # a, c -> block 1; b -> block 0; block 2 is empty
    grams = row_math.block_gramians(rows, leaf_blocks, 3)
    flat = {k: np.asarray(v).reshape(3, -1) for k, v in rows.items()}
    np.testing.assert_allclose(grams[0], flat["b"] @ flat["b"].T, rtol=1e-5)
    np.testing.assert_allclose(
        grams[1], flat["a"] @ flat["a"].T + flat["c"] @ flat["c"].T, rtol=1e-5
    )
    np.testing.assert_array_equal(grams[2], np.zeros((3, 3)))
    np.testing.assert_allclose(grams.sum(0), row_math.gramian(rows), rtol=1e-5)

    weights = jnp.asarray([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0], [9.0, 9.0, 9.0]])
    combined = row_math.combine(weights, rows, leaf_blocks)
    np.testing.assert_allclose(combined["b"], np.tensordot(weights[0], rows["b"], 1), rtol=1e-6)
    for key in ("a", "c"):
        np.testing.assert_allclose(combined[key], np.tensordot(weights[1], rows[key], 1), rtol=1e-6)
    with pytest.raises(ValueError, match="2 block indices for 3 leaves"):
        row_math.block_gramians(rows, (0, 0), 1)


def _per_task_shared_grads(model, tasks, state, batch):
    """[T]-stacked shared-parameter gradients of each task's loss, by plain `jax.grad`."""

    def task_loss(shared, t):
        params = {**state.params, "shared": shared}
        preds, _ = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True
        )
        return jacobian.loss_vector(tasks, preds, batch)[t]

    grads = [jax.grad(task_loss)(state.params["shared"], t) for t in range(len(model.task_names))]
    return jax.tree.map(lambda *g: jnp.stack(g), *grads)


def test_layerwise_gradvac_combines_each_layer_with_its_own_weights():
    tasks, model, _, batch = multi_mnist_setup()
    method = weighting.gradvac(blocks="layer")
    tx = grad_recorder()
    state = create_train_state(model, tx, method, batch["image"], seed=0)
    shared = state.params["shared"]
    ids, num_blocks = param_blocks.assign(shared, "layer")
    assert num_blocks == len(shared) == 3  # LeNet: Conv_0, Conv_1, Dense_0
    assert state.weighting_state.targets.shape == (num_blocks, 3, 3)
    # High targets, so that every layer corrects its pairs with its own cosines.
    targets = jnp.full((num_blocks, 3, 3), 0.9, jnp.float32)
    state = state._replace(weighting_state=state.weighting_state._replace(targets=targets))

    step = jax.jit(make_train_step(model, tasks, tx, method, jit=False))
    new_state, metrics = step(state, batch)
    rows = _per_task_shared_grads(model, tasks, state, batch)
    block_weights = metrics["block_weights"]
    assert block_weights.shape == (num_blocks, 3)
    # Each layer corrects toward 0.9 from its own cosines: the layers' weights differ.
    assert not np.allclose(block_weights[0], block_weights[1], rtol=1e-3)
    np.testing.assert_allclose(metrics["weights"], block_weights.mean(0), rtol=1e-6)
    want = row_math.combine(block_weights, rows, ids)
    for got, expected in zip(
        jax.tree.leaves(new_state.opt_state["shared"]), jax.tree.leaves(want), strict=True
    ):
        assert relative_error(got, expected) <= 1e-4
    # Each layer ran Alg. 1 on its own Gramian: the same as the whole-model method given
    # only that layer's gradients (two tasks order-free; here three, same seed and key).
    grams = row_math.block_gramians(rows, ids, num_blocks)
    whole = weighting.gradvac()
    for b in range(num_blocks):
        whole_state = whole.init(model.task_names)._replace(targets=targets[b])
        key = step_keys(state.rng, state.step).weighting  # the key the step gave the method
        w_b, s_b, _ = whole.update(None, whole_state, key=key, gramian=grams[b])
        np.testing.assert_allclose(block_weights[b], w_b, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            new_state.weighting_state.targets[b], s_b.targets, rtol=1e-4, atol=1e-6
        )
    # The second step reuses the compiled program (same state structure).
    step(new_state, batch)
    assert step._cache_size() == 1


def test_gradnorm_last_layer_measures_norms_on_the_last_layer():
    tasks, model, _, batch = multi_mnist_setup()
    tx = grad_recorder()
    rows = None
    losses = {}
    for norms_on in ("shared", "last_layer"):
        method = weighting.gradnorm(norms_on=norms_on)
        state = create_train_state(model, tx, method, batch["image"], seed=0)
        if rows is None:
            rows = _per_task_shared_grads(model, tasks, state, batch)
        _, metrics = make_train_step(model, tasks, tx, method, jit=False)(state, batch)
        losses[norms_on] = float(metrics["weighting/gradnorm_loss"])
    # First step: w = 1 and r = 1, so the GradNorm loss is Σ_t |n_t − mean(n)|.
    for norms_on, subtree in (("shared", rows), ("last_layer", rows["Dense_0"])):
        norms = np.sqrt(np.asarray(row_math.gramian(subtree)).diagonal())
        want = np.abs(norms - norms.mean()).sum()
        np.testing.assert_allclose(losses[norms_on], want, rtol=1e-4)
    assert not np.isclose(losses["shared"], losses["last_layer"], rtol=1e-2)


def test_blocked_methods_refuse_rep_grad_and_plain_matrices():
    tasks, model, _, batch = multi_mnist_setup()
    tx = optax.sgd(0.1)
    for method in (weighting.gradvac(blocks="tensor"), weighting.gradnorm(norms_on="last_layer")):
        with pytest.raises(ValueError, match="needs parameter mode"):
            make_train_step(model, tasks, tx, method, rep_grad=True)
        with pytest.raises(ValueError, match="needs parameter mode"):
            create_train_state(model, tx, method, batch["image"], seed=0, rep_grad=True)
        with pytest.raises(ValueError, match="a \\[T, P\\] matrix has none"):
            weighting.aggregate(method, jnp.eye(2))
        with pytest.raises(ValueError, match="needs the gradient shape"):
            method.init_for(("a", "b"))
    loss_method = weighting.equal()._replace(blocks="layer")
    with pytest.raises(ValueError, match="for gramian-kind methods"):
        make_train_step(model, tasks, tx, loss_method)
    with pytest.raises(ValueError, match="gradvac: blocks"):
        weighting.gradvac(blocks="last_layer")
    with pytest.raises(ValueError, match="gradnorm: norms_on"):
        weighting.gradnorm(norms_on="layer")


BLOCKED = {
    "gradvac_layer": lambda: weighting.gradvac(blocks="layer"),
    "gradvac_tensor": lambda: weighting.gradvac(blocks="tensor"),
    "gradnorm_last_layer": lambda: weighting.gradnorm(norms_on="last_layer"),
}


@pytest.mark.parametrize("variant", sorted(BLOCKED))
@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_blocked_variants_keep_the_contract_on_the_bank(variant, case):
    """Donated jit without recompiling, a stable state and finite output, with the bank's
    columns split into two layers (the second one the 'last layer')."""
    jac = jnp.asarray(jacobian_bank()[case])
    num_tasks, num_params = jac.shape
    split = max(num_params // 2, 1)
    rows = {
        "first": {"kernel": jac[:, :split, None]},
        "last": {"kernel": jac[:, split:, None]},
    }
    row_shape = jax.eval_shape(lambda r: jax.tree.map(lambda x: x[0], r), rows)
    method = BLOCKED[variant]()
    ids, num_blocks = param_blocks.assign(row_shape, method.blocks, last=("last",))
    state = method.init_for(weighting.default_task_names(num_tasks), row_shape)

    def aggregate(rows, losses, state):
        grams = row_math.block_gramians(rows, ids, num_blocks)
        weights, state, _ = method.update(losses, state, key=KEY, gramian=grams)
        return row_math.combine(weights, rows, ids if weights.ndim == 2 else None), weights, state

    update = jax.jit(aggregate, donate_argnums=2)
    losses = jnp.linspace(0.5, 2.0, num_tasks)
    direction, weights, new_state = update(rows, losses, state)
    direction, weights, new_state = update(rows, losses * 3, new_state)
    assert update._cache_size() == 1, "recompiled on the second call"
    want = (num_blocks, num_tasks) if variant.startswith("gradvac") else (num_tasks,)
    assert weights.shape == want and np.all(np.isfinite(weights)), case
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(direction)), case
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
