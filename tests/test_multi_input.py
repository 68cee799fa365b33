"""Per-task inputs (multi-input MTL, LibMTL's `multi_input=True`): one input per task.

A tiny conv trunk with BatchNorm, three tasks with different batch sizes and input channel
counts (two through their own stems), against hand-written per-task losses. The single
"image" path is covered, unchanged, by `test_train.py`, `test_jacobian.py` and the
sharded-equals-unsharded checks of `test_parallel.py`; `test_same_image_for_every_task_*`
here ties the two formats together.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import jacobian, row_math, weighting
from mtl_jax.losses import masked_mean
from mtl_jax.models import MultiTaskModel
from mtl_jax.tasks import Classification
from mtl_jax.train import (
    accumulate_stats,
    create_train_state,
    make_eval_step,
    make_train_step,
)
from tests.helpers import grad_recorder, relative_error
from tests.test_weighting_contract import build

SIZES = {"amazon": 3, "dslr": 5, "webcam": 4}  # B_t
CHANNELS = {"amazon": 1, "dslr": 2, "webcam": 3}  # webcam has no stem: 3 = the trunk's
CLASSES = {"amazon": 3, "dslr": 4, "webcam": 2}
MOMENTUM = 0.9
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Trunk(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=MOMENTUM)(x)
        return nn.Dense(5)(jnp.mean(nn.relu(x), axis=(1, 2)))


class Stem(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        del train
        return jnp.tanh(nn.Conv(3, (1, 1))(x))


class Head(nn.Module):
    classes: int

    @nn.compact
    def __call__(self, x, train: bool):
        del train
        return nn.Dense(self.classes)(x)


TASKS = {name: Classification(name, CLASSES[name]) for name in SIZES}
NAMES = tuple(sorted(SIZES))
STEMS = {"amazon": Stem(), "dslr": Stem()}
HEADS = {name: Head(CLASSES[name]) for name in SIZES}


def make_model(input_bn: str = "shared") -> MultiTaskModel:
    return MultiTaskModel(Trunk(), HEADS, stems=STEMS, input_bn=input_bn)


def make_batch(seed: int = 0, valid: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        "inputs": {
            n: jnp.asarray(rng.normal(size=(SIZES[n], 6, 6, CHANNELS[n])), jnp.float32)
            for n in NAMES
        },
        "targets": {
            n: jnp.asarray(rng.integers(0, CLASSES[n], SIZES[n]), jnp.int32) for n in NAMES
        },
    }
    if valid:
        batch["valid"] = {n: jnp.arange(SIZES[n]) < SIZES[n] - 1 for n in NAMES}
    return batch


def setup(input_bn: str = "shared"):
    model = make_model(input_bn)
    batch = make_batch()
    variables = model.init(jax.random.PRNGKey(0), batch["inputs"])
    return model, variables, batch


def trunk_input(params, name, x):
    """Task `name`'s input through its stem, with the Linen modules themselves."""
    if name not in STEMS:
        return x
    return STEMS[name].apply({"params": params["tasks"][name]["stem"]}, x, train=True)


def hand_rep(params, stats, name, batch):
    """r_t in training mode (BatchNorm normalises with the batch: no running statistics)."""
    x = trunk_input(params, name, batch["inputs"][name])
    rep, _ = Trunk().apply(
        {"params": params["shared"], "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
    )
    return rep


def hand_head_loss(params, name, rep, batch):
    head = {k: v for k, v in params["tasks"][name].items() if k != "stem"}
    pred = HEADS[name].apply({"params": head}, rep, train=True)
    valid = jacobian.task_valid(batch, name)
    return masked_mean(*TASKS[name].loss(pred, batch["targets"][name], valid))


def hand_loss(params, stats, name, batch):
    """Task `name`'s loss, on its own input and targets only, the plain way."""
    return hand_head_loss(params, name, hand_rep(params, stats, name, batch), batch)


def hand_grads(variables, batch):
    """{task: jax.grad of that task's loss alone} (all parameters)."""
    stats = variables["batch_stats"]["shared"]
    return {
        n: jax.grad(lambda p, n=n: hand_loss(p, stats, n, batch))(variables["params"])
        for n in NAMES
    }


def assert_trees_close(got, want, tol=1e-5):
    """Relative error of the whole tree (a conv bias before BatchNorm has a gradient of
    rounding size only, so a leaf-wise relative error would measure noise)."""
    assert jax.tree.structure(got) == jax.tree.structure(want)

    def flat(tree):
        return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])

    assert relative_error(flat(got), flat(want)) <= tol


def test_layout_stems_are_task_owned():
    model, variables, _ = setup()
    params, stats = variables["params"], variables["batch_stats"]
    assert set(params["shared"]) == {"Conv_0", "BatchNorm_0", "Dense_0"}
    assert set(stats["shared"]) == {"BatchNorm_0"}
    for name in NAMES:
        assert ("stem" in params["tasks"][name]) == (name in STEMS)
        assert ("stem" in stats["tasks"][name]) == (name in STEMS)
    assert params["tasks"]["amazon"]["stem"]["Conv_0"]["kernel"].shape == (1, 1, 1, 3)
    assert params["tasks"]["dslr"]["stem"]["Conv_0"]["kernel"].shape == (1, 1, 2, 3)
    preds, _ = model.apply(variables, make_batch()["inputs"])
    assert {n: p.shape for n, p in preds.items()} == {n: (SIZES[n], CLASSES[n]) for n in NAMES}


@pytest.mark.parametrize("valid", [False, True])
def test_parameter_rows_and_task_grads_equal_separate_grads(valid):
    model, variables, _ = setup()
    batch = make_batch(valid=valid)
    stats = variables["batch_stats"]

    @jax.jit
    def engine(params):
        pullbacks = jacobian.forward_with_pullbacks(model, TASKS, params, stats, batch)
        rows = jacobian.shared_jacobian(pullbacks)
        chunked = jacobian.shared_jacobian(pullbacks, chunk_size=2)
        return rows, chunked, pullbacks.head_grads, pullbacks.losses

    rows, chunked, head_grads, losses = engine(variables["params"])
    want = hand_grads(variables, batch)
    for index, name in enumerate(NAMES):
        value = hand_loss(variables["params"], stats["shared"], name, batch)
        np.testing.assert_allclose(losses[index], value, rtol=1e-6)
        assert_trees_close(jax.tree.map(lambda r, i=index: r[i], rows), want[name]["shared"])
        assert_trees_close(jax.tree.map(lambda r, i=index: r[i], chunked), want[name]["shared"])
        # The task-owned gradient (head and stem) is the task's own loss gradient.
        assert_trees_close(head_grads[name], want[name]["tasks"][name])


def test_rep_grad_rows_are_each_tasks_own_representation_cotangent():
    model, variables, batch = setup()
    params, stats = variables["params"], variables["batch_stats"]
    pullbacks = jax.jit(
        lambda p: jacobian.forward_with_pullbacks(model, TASKS, p, stats, batch)[:3]
    )(params)
    full = jacobian.forward_with_pullbacks(model, TASKS, params, stats, batch)
    rep_grads = pullbacks[2]
    want = hand_grads(variables, batch)
    for index, name in enumerate(NAMES):
        rep = hand_rep(params, stats["shared"], name, batch)
        z = jax.grad(lambda r, n=name: hand_head_loss(params, n, r, batch))(rep)
        for owner in NAMES:
            row = rep_grads[owner][index]
            assert row.shape == (SIZES[owner], 5)
            if owner == name:
                assert relative_error(row, z) <= 1e-5
            else:  # zeros on the other tasks' representations
                assert not np.any(row)
        # The trunk pullback of row t is ∂L_t/∂θ_shared.
        row_t = jax.tree.map(lambda r, i=index: r[i], full.rep_grads)
        assert_trees_close(full.trunk_pullback(row_t), want[name]["shared"])
    # Rows of different tasks never overlap: the representation Gramian is diagonal.
    gram = np.asarray(row_math.gramian(rep_grads))
    np.testing.assert_array_equal(gram, np.diag(np.diagonal(gram)))


def test_equal_is_the_gradient_of_the_sum_of_task_losses():
    model, _, batch = setup()
    tx = grad_recorder()
    w = weighting.equal()
    state = create_train_state(model, tx, w, batch["inputs"], seed=0)
    grads = make_train_step(model, TASKS, tx, w, jit=False)(state, batch)[0].opt_state
    stats = state.batch_stats["shared"]
    total = jax.grad(lambda p: sum(hand_loss(p, stats, n, batch) for n in NAMES))(state.params)
    assert_trees_close(grads, total)


@pytest.mark.parametrize("rep_grad", [False, True])
def test_gramian_method_combines_each_tasks_own_gradient(rep_grad):
    model, _, batch = setup()
    tx = grad_recorder()
    w = weighting.mgda()
    state = create_train_state(model, tx, w, batch["inputs"], seed=0, rep_grad=rep_grad)
    step = make_train_step(model, TASKS, tx, w, rep_grad=rep_grad, jit=False)
    new_state, metrics = step(state, batch)
    want = hand_grads({"params": state.params, "batch_stats": state.batch_stats}, batch)
    weights = metrics["weights"]
    shared = jax.tree.map(
        lambda *g: sum(wt * gt for wt, gt in zip(weights, g, strict=True)),
        *(want[n]["shared"] for n in NAMES),
    )
    assert_trees_close(new_state.opt_state["shared"], shared)
    for name in NAMES:  # heads and stems: their own unweighted gradient
        assert_trees_close(new_state.opt_state["tasks"][name], want[name]["tasks"][name])
    np.testing.assert_allclose(np.sum(weights), 1.0, rtol=1e-5)


@pytest.mark.parametrize("method", ["equal", "mgda"])
def test_same_image_for_every_task_matches_the_single_image_path(method):
    """Without stems, `inputs = {t: x for every t}` gives the losses and gradients of
    `image = x` (only the BatchNorm running statistics differ: updated T times)."""
    tasks = {n: Classification(n, 3) for n in ("left", "right")}
    model = MultiTaskModel(Trunk(), {n: Head(3) for n in tasks})
    rng = np.random.default_rng(1)
    image = jnp.asarray(rng.normal(size=(4, 6, 6, 3)), jnp.float32)
    targets = {n: jnp.asarray(rng.integers(0, 3, 4), jnp.int32) for n in tasks}
    single = {"image": image, "targets": targets}
    multi = {"inputs": {n: image for n in tasks}, "targets": targets}
    tx = grad_recorder()
    w = weighting.create(method)
    state = create_train_state(model, tx, w, image, seed=0)
    assert jax.tree.structure(state) == jax.tree.structure(
        create_train_state(model, tx, w, multi["inputs"], seed=0)
    )
    step = make_train_step(model, tasks, tx, w, jit=False)
    (a, metrics_a), (b, metrics_b) = step(state, single), step(state, multi)
    np.testing.assert_allclose(metrics_a["loss"], metrics_b["loss"], rtol=1e-6)
    assert_trees_close(a.opt_state, b.opt_state)


def test_shared_bn_statistics_are_updated_once_per_task_in_sorted_order():
    model, variables, batch = setup("shared")
    params, stats = variables["params"], variables["batch_stats"]
    pullbacks = jacobian.forward_with_pullbacks(model, TASKS, params, stats, batch)

    def updated(order):
        running = stats["shared"]
        for name in order:
            x = trunk_input(params, name, batch["inputs"][name])
            _, new = Trunk().apply(
                {"params": params["shared"], "batch_stats": running},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            running = new["batch_stats"]
        return running

    assert_trees_close(pullbacks.batch_stats["shared"], updated(NAMES), tol=1e-6)
    reverse = updated(NAMES[::-1])["BatchNorm_0"]["mean"]
    assert not np.allclose(pullbacks.batch_stats["shared"]["BatchNorm_0"]["mean"], reverse)
    # Evaluation normalises every task with the one shared set.
    preds, _ = model.apply(
        {"params": params, "batch_stats": pullbacks.batch_stats}, batch["inputs"]
    )
    for name in NAMES:
        x = trunk_input(params, name, batch["inputs"][name])
        rep = Trunk().apply(
            {"params": params["shared"], "batch_stats": pullbacks.batch_stats["shared"]},
            x,
            train=False,
        )
        head = {k: v for k, v in params["tasks"][name].items() if k != "stem"}
        np.testing.assert_allclose(
            preds[name], HEADS[name].apply({"params": head}, rep, train=False), rtol=1e-5
        )


def test_per_task_bn_keeps_each_tasks_own_statistics():
    model, variables, batch = setup("per_task")
    params, stats = variables["params"], variables["batch_stats"]
    assert stats["shared"] == {}
    for name in NAMES:
        assert set(stats["tasks"][name]["trunk"]) == {"BatchNorm_0"}
    tx = optax.sgd(0.0)  # parameters fixed: only the statistics move
    w = weighting.equal()
    state = create_train_state(model, tx, w, batch["inputs"], seed=0)
    # Host copies: the step donates the state.
    params, stats = jax.device_get((state.params, state.batch_stats))
    step = make_train_step(model, TASKS, tx, w)
    state, _ = step(state, batch)
    state, _ = step(state, batch)
    assert step._cache_size() == 1
    means = {}
    for name in NAMES:
        # Two updates from its own input only: the other tasks' inputs never enter.
        running = stats["tasks"][name]["trunk"]
        x = trunk_input(params, name, batch["inputs"][name])
        for _ in range(2):
            _, new = Trunk().apply(
                {"params": params["shared"], "batch_stats": running},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            running = new["batch_stats"]
        assert_trees_close(state.batch_stats["tasks"][name]["trunk"], running, tol=1e-6)
        means[name] = np.asarray(running["BatchNorm_0"]["mean"])
    assert not np.allclose(means["amazon"], means["dslr"])
    # At evaluation each domain is normalised with its own statistics.
    preds, _ = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["inputs"]
    )
    for name in NAMES:
        x = trunk_input(state.params, name, batch["inputs"][name])
        rep = Trunk().apply(
            {
                "params": state.params["shared"],
                "batch_stats": state.batch_stats["tasks"][name]["trunk"],
            },
            x,
            train=False,
        )
        head = {k: v for k, v in state.params["tasks"][name].items() if k != "stem"}
        np.testing.assert_allclose(
            preds[name], HEADS[name].apply({"params": head}, rep, train=False), rtol=1e-5
        )


def test_eval_step_reads_each_tasks_own_valid_examples_and_task_subsets():
    model, variables, _ = setup()
    batch = make_batch(seed=3, valid=True)
    eval_step = make_eval_step(model, TASKS)
    stats = eval_step(variables["params"], variables["batch_stats"], batch)
    preds, _ = model.apply(variables, batch["inputs"])
    for name in NAMES:
        valid = np.asarray(batch["valid"][name])
        assert int(stats[name]["loss_count"]) == valid.sum()
        values, mask = TASKS[name].loss(preds[name], batch["targets"][name], valid)
        np.testing.assert_allclose(stats[name]["loss_sum"], np.sum(values * mask), rtol=1e-5)
    # One domain's batch at a time (`data.multi_input.eval_batches(per_task=True)`).
    one = {key: {"amazon": batch[key]["amazon"]} for key in ("inputs", "targets", "valid")}
    totals = accumulate_stats(
        eval_step, variables["params"], variables["batch_stats"], [batch, one, one]
    )
    assert int(totals["amazon"]["loss_count"]) == 3 * int(stats["amazon"]["loss_count"])
    assert int(totals["dslr"]["loss_count"]) == int(stats["dslr"]["loss_count"])


def _without(tree, *path):
    tree = {k: dict(v) if isinstance(v, dict) else v for k, v in tree.items()}
    del tree[path[0]][path[1]]
    return tree


@pytest.mark.parametrize(
    ("broken", "match"),
    [
        (lambda b: _without(b, "inputs", "dslr"), "inputs: no entry for task 'dslr'"),
        (lambda b: _without(b, "targets", "webcam"), "targets: no entry for task 'webcam'"),
        (
            lambda b: {**b, "inputs": {**b["inputs"], "caltech": b["inputs"]["webcam"]}},
            "inputs: entry for unknown task 'caltech'",
        ),
        (lambda b: {**b, "image": b["inputs"]["webcam"]}, "not both"),
        (
            lambda b: {**b, "targets": {**b["targets"], "dslr": b["targets"]["dslr"][:2]}},
            "task 'dslr': its input has batch size 5, its targets",
        ),
        (
            lambda b: {**b, "valid": {n: jnp.ones(2, bool) for n in NAMES}},
            "task 'amazon': its input has batch size 3, its valid",
        ),
        (
            lambda b: {"image": b["inputs"]["webcam"], "targets": b["targets"]},
            "have input stems",
        ),
    ],
)
def test_bad_batches_fail_before_compiling_naming_the_task(broken, match):
    model, _, batch = setup()
    w = weighting.equal()
    tx = optax.sgd(0.1)
    state = create_train_state(model, tx, w, batch["inputs"], seed=0)
    step = make_train_step(model, TASKS, tx, w)
    bad = broken(batch)
    compiles = []

    def listener(event, duration, **kwargs):
        del duration, kwargs
        if event == BACKEND_COMPILE_EVENT:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with pytest.raises(ValueError, match=match):
            step(state, bad)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiles  # raised while tracing: nothing was compiled
    eval_step = make_eval_step(model, TASKS)
    if "both" not in match and "stems" not in match and "no entry for task 'dslr'" not in match:
        with pytest.raises(ValueError, match=match):
            eval_step(state.params, state.batch_stats, bad)


def test_bad_model_options_and_init_inputs():
    with pytest.raises(ValueError, match="input_bn must be one of"):
        MultiTaskModel(Trunk(), HEADS, input_bn="domain")
    with pytest.raises(ValueError, match="stems for unknown tasks"):
        MultiTaskModel(Trunk(), HEADS, stems={"caltech": Stem()})
    model = make_model()
    inputs = make_batch()["inputs"]
    with pytest.raises(ValueError, match="no entry for task 'webcam'"):
        model.init(jax.random.PRNGKey(0), {n: inputs[n] for n in ("amazon", "dslr")})
    with pytest.raises(ValueError, match="give one input per task"):
        model.init(jax.random.PRNGKey(0), inputs["webcam"])
    # Without a stem, dslr's 2 channels cannot feed a trunk built on 3-channel inputs.
    no_dslr_stem = MultiTaskModel(Trunk(), HEADS, stems={"amazon": Stem()})
    with pytest.raises(ValueError, match="task 'dslr': its trunk input"):
        no_dslr_stem.init(jax.random.PRNGKey(0), inputs)


# rep_grad mode (rows {task: r_t}, zeros off the task's own) for gramian and jacobian
# methods whose state is shaped like a row (MoCo, GradDrop) or that solve on G (MGDA,
# PCGrad); every gramian/jacobian method in rep_grad mode would double the time.
REP_GRAD_METHODS = ("graddrop", "mgda", "moco", "pcgrad")


@pytest.mark.parametrize(
    ("name", "rep_grad"),
    [(name, False) for name in weighting.METHODS] + [(name, True) for name in REP_GRAD_METHODS],
)
def test_every_method_trains_on_per_task_inputs(name, rep_grad):
    """The contract of `test_weighting_contract` (its per-method options, `build`) on
    per-task inputs: the step jits, does not recompile on a second batch of the same
    shapes, keeps the state's structure, and gives finite losses, weights and params."""
    model = make_model()
    w = build(name, len(NAMES))
    if name == "fixed":
        w = weighting.fixed(weights={n: 1.0 + i for i, n in enumerate(NAMES)})
    tx = optax.adam(1e-2)
    state = create_train_state(model, tx, w, make_batch()["inputs"], seed=0, rep_grad=rep_grad)
    structure = jax.tree.structure(state)
    step = make_train_step(model, TASKS, tx, w, rep_grad=rep_grad)

    def batch(seed):  # a multi-batch method (SDMGrad, MoDo) takes w.batches of them
        if w.batches == 1:
            return make_batch(seed=seed)
        return {str(i): make_batch(seed=10 * seed + i) for i in range(w.batches)}

    state, _ = step(state, batch(1))
    state, metrics = step(state, batch(2))
    assert step._cache_size() == 1, "recompiled on the second call"
    assert jax.tree.structure(state) == structure
    assert metrics["loss"].shape == (len(NAMES),) and np.all(np.isfinite(metrics["loss"]))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))
    if "weights" in metrics:
        assert np.all(np.isfinite(metrics["weights"]))
