"""The jitted train step: topology, gradients routed as documented, no recompilation."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import weighting
from mtl_jax.losses import masked_mean
from mtl_jax.train import create_train_state, make_train_step
from tests.helpers import grad_recorder, multi_mnist_setup, relative_error


def test_parameter_tree_is_exactly_shared_and_tasks():
    tasks, model, variables, _ = multi_mnist_setup()
    assert set(variables) == {"params", "batch_stats"}
    for collection in variables.values():
        assert set(collection) == {"shared", "tasks"}
        assert set(collection["tasks"]) == set(tasks)
    assert set(variables["params"]["shared"]) == {"Conv_0", "Conv_1", "Dense_0"}


@pytest.mark.parametrize("method", ["equal", "mgda"])
def test_train_step_compiles_once(method):
    tasks, model, _, batch = multi_mnist_setup()
    tx = optax.adam(1e-3)
    w = weighting.create(method)
    state = create_train_state(model, tx, w, batch["image"], seed=0)
    step = make_train_step(model, tasks, tx, w)
    state, _ = step(state, batch)
    state, metrics = step(state, batch)
    assert step._cache_size() == 1
    assert int(state.step) == 2
    assert metrics["loss"].shape == (3,) and metrics["weights"].shape == (3,)


def _objective_grads(model, tasks, state, batch, weights):
    """Plain `jax.grad` of Σ_t w_t L_t and of Σ_t L_t."""

    def task_losses(params):
        preds, _ = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True
        )
        valid = jnp.ones(batch["image"].shape[0], bool)
        return jnp.stack(
            [
                masked_mean(*tasks[n].loss(preds[n], batch["targets"][n], valid))
                for n in model.task_names
            ]
        )

    weighted = jax.grad(lambda p: jnp.dot(weights, task_losses(p)))(state.params)
    unweighted = jax.grad(lambda p: jnp.sum(task_losses(p)))(state.params)
    return weighted, unweighted


@pytest.mark.parametrize("head_grads", ["unweighted", "weighted"])
def test_loss_method_gradients(head_grads):
    """Shared params get ∇(Σ w L); heads their own loss gradient (optionally × w_t)."""
    tasks, model, _, batch = multi_mnist_setup()
    weights = {"boundary": 0.5, "left": 2.0, "right": 0.25}
    w = weighting.fixed(weights=weights)
    vector = jnp.asarray([weights[n] for n in model.task_names])
    tx = grad_recorder()
    state = create_train_state(model, tx, w, batch["image"], seed=0)
    weighted, unweighted = _objective_grads(model, tasks, state, batch, vector)
    step = make_train_step(model, tasks, tx, w, head_grads=head_grads, jit=False)
    got = step(state, batch)[0].opt_state
    want_heads = weighted["tasks"] if head_grads == "weighted" else unweighted["tasks"]
    for a, b in zip(
        jax.tree.leaves(got["shared"]), jax.tree.leaves(weighted["shared"]), strict=True
    ):
        assert relative_error(a, b) <= 1e-5
    for a, b in zip(jax.tree.leaves(got["tasks"]), jax.tree.leaves(want_heads), strict=True):
        assert relative_error(a, b) <= 1e-5


def test_gramian_method_uses_its_weights_on_parameter_gradients():
    tasks, model, _, batch = multi_mnist_setup()
    w = weighting.mgda()
    tx = grad_recorder()
    state = create_train_state(model, tx, w, batch["image"], seed=0)
    new_state, metrics = make_train_step(model, tasks, tx, w, jit=False)(state, batch)
    weighted, unweighted = _objective_grads(model, tasks, state, batch, metrics["weights"])
    got = new_state.opt_state
    for a, b in zip(
        jax.tree.leaves(got["shared"]), jax.tree.leaves(weighted["shared"]), strict=True
    ):
        assert relative_error(a, b) <= 1e-5
    for a, b in zip(
        jax.tree.leaves(got["tasks"]), jax.tree.leaves(unweighted["tasks"]), strict=True
    ):
        assert relative_error(a, b) <= 1e-5
    np.testing.assert_allclose(np.sum(metrics["weights"]), 1.0, rtol=1e-5)
    assert metrics["grad_cosine"].shape == (3, 3)
    np.testing.assert_allclose(np.diagonal(metrics["grad_cosine"]), 1.0, rtol=1e-5)


def test_rep_grad_mode_runs_and_differs_from_parameter_mode():
    tasks, model, _, batch = multi_mnist_setup()
    w = weighting.mgda()
    tx = optax.sgd(1.0)
    state = create_train_state(model, tx, w, batch["image"], seed=0)
    _, param_metrics = make_train_step(model, tasks, tx, w, jit=False)(state, batch)
    _, rep_metrics = make_train_step(model, tasks, tx, w, rep_grad=True, jit=False)(state, batch)
    assert np.all(np.isfinite(rep_metrics["weights"]))
    np.testing.assert_allclose(np.sum(rep_metrics["weights"]), 1.0, rtol=1e-5)
    # Different Gramians (parameter vs representation gradients) give different norms.
    assert not np.allclose(param_metrics["grad_norm"], rep_metrics["grad_norm"])


def test_invalid_head_grads_rejected():
    tasks, model, _, _ = multi_mnist_setup()
    with pytest.raises(ValueError, match="head_grads must be one of"):
        make_train_step(model, tasks, optax.sgd(1.0), weighting.equal(), head_grads="both")


class _RowSumState(NamedTuple):
    calls: jax.Array


def _row_sum_method() -> weighting.Weighting:
    """A jacobian-kind test double: direction = Σ_t rows_t, i.e. the gradient of Σ L."""

    def init(task_names, row):
        del task_names, row
        return _RowSumState(jnp.zeros((), jnp.int32))

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, gramian
        return jax.tree.map(lambda r: r.sum(0), rows), _RowSumState(state.calls + 1), {}

    return weighting.Weighting(init=init, update=update, kind=weighting.JACOBIAN)


@pytest.mark.parametrize("rep_grad", [False, True])
def test_jacobian_method_direction_is_the_shared_gradient(rep_grad):
    tasks, model, _, batch = multi_mnist_setup()
    w = _row_sum_method()
    tx = grad_recorder()
    state = create_train_state(model, tx, w, batch["image"], seed=0, rep_grad=rep_grad)
    step = make_train_step(model, tasks, tx, w, rep_grad=rep_grad, jit=False)
    new_state, metrics = step(state, batch)
    _, unweighted = _objective_grads(model, tasks, state, batch, jnp.ones(3))
    for a, b in zip(jax.tree.leaves(new_state.opt_state), jax.tree.leaves(unweighted), strict=True):
        assert relative_error(a, b) <= 1e-5
    assert "weights" not in metrics and metrics["grad_cosine"].shape == (3, 3)
    assert int(new_state.weighting_state.calls) == 1
    with pytest.raises(ValueError, match="jacobian methods have none"):
        make_train_step(model, tasks, tx, w, head_grads="weighted")


class _AfterState(NamedTuple):
    before: jax.Array
    after: jax.Array


def test_after_update_gets_the_losses_under_the_new_parameters():
    tasks, model, _, batch = multi_mnist_setup()

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        return jnp.ones_like(losses), state, {}

    def after_update(before, after, state):
        del state
        return _AfterState(before, after), {"after_mean": after.mean()}

    w = weighting.Weighting(
        init=lambda names: _AfterState(jnp.zeros(len(names)), jnp.zeros(len(names))),
        update=update,
        kind=weighting.LOSS,
        after_update=after_update,
    )
    tx = optax.sgd(0.1)
    state = create_train_state(model, tx, w, batch["image"], seed=0)
    new_state, metrics = make_train_step(model, tasks, tx, w, jit=False)(state, batch)
    recorded = new_state.weighting_state
    np.testing.assert_allclose(recorded.before, metrics["loss"], rtol=1e-6)
    preds, _ = model.apply(
        {"params": new_state.params, "batch_stats": state.batch_stats}, batch["image"], train=True
    )
    valid = jnp.ones(batch["image"].shape[0], bool)
    expected = [
        masked_mean(*tasks[n].loss(preds[n], batch["targets"][n], valid)) for n in model.task_names
    ]
    np.testing.assert_allclose(recorded.after, expected, rtol=1e-5)
    assert not np.allclose(recorded.after, recorded.before)
    assert "weighting/after_mean" in metrics


@pytest.mark.slow  # one ResNet-18 compile: about 65 s on 2 cores
def test_dropout_key_comes_from_seed_and_step():
    """ResNet DeepLab heads use dropout: its key comes from (rng, step) (`step_keys`)."""
    from mtl_jax.models import build_model
    from mtl_jax.tasks import Segmentation

    tasks = {"seg": Segmentation("seg", 3, height=16, width=16)}
    model = build_model("resnet18", tasks, width_multiplier=1 / 16, aspp_dropout=0.5)
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32),
        "targets": {"seg": jnp.asarray(rng.integers(0, 3, size=(2, 16, 16)), jnp.int32)},
    }
    w = weighting.equal()
    tx = grad_recorder()
    state = create_train_state(model, tx, w, batch["image"], seed=0)
    step = jax.jit(make_train_step(model, tasks, tx, w, jit=False))  # no donation: reused
    first = step(state, batch)[0].opt_state
    again = step(state, batch)[0].opt_state
    later = step(state._replace(step=state.step + 1), batch)[0].opt_state
    leaves = jax.tree.leaves
    assert all(np.array_equal(a, b) for a, b in zip(leaves(first), leaves(again), strict=True))
    assert not all(np.allclose(a, b) for a, b in zip(leaves(first), leaves(later), strict=True))
