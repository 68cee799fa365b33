"""Architectures match their specifications; `build_model`; mixed precision; shared layers.

Parameter counts of W1–W3 come from WORKLOADS.md. The helpers at the top
(`count`, `random_variables`, `check_architecture`) are shared by the per-architecture
test modules (test_segnet.py, test_resnet.py, test_cross_stitch.py, test_mmoe.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from mtl_jax import jacobian
from mtl_jax.losses import masked_mean
from mtl_jax.models import ARCHITECTURES, TRUNKS, MultiTaskModel, build_model, layers
from mtl_jax.tasks import BinaryLabels, Boundary, Classification, Depth, Segmentation


def count(tree) -> int:
    """Number of scalars in a pytree of arrays or shape structs."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def random_variables(model: MultiTaskModel, image, seed: int = 0):
    """Variables with the structure and dtypes of `model.init`, filled by numpy.

    `model.init` itself compiles one random-number program per parameter shape, which
    dominates the run time of tiny test models; `jax.eval_shape` gives the structure for
    free. Kernels ~ N(0, 1/fan_in); BatchNorm scales and variances near 1; biases, means
    and other parameters (cross-stitch units) small and nonzero.
    """
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(path[-1].key)
        if name == "kernel":
            value = rng.normal(size=leaf.shape) / np.sqrt(max(1, int(np.prod(leaf.shape[:-1]))))
        elif name in ("scale", "var"):
            value = 1.0 + 0.1 * np.abs(rng.normal(size=leaf.shape))
        elif name in ("bias", "mean"):
            value = 0.1 * rng.normal(size=leaf.shape)
        else:
            value = rng.uniform(0.2, 1.0, size=leaf.shape)
        return jnp.asarray(np.asarray(value, leaf.dtype))

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _leaf_perturbations(params, seed: int = 2):
    """Yields (part, path, params with only that leaf perturbed) for every parameter leaf.

    `part` is "shared" or the task name owning the leaf.
    """
    rng = np.random.default_rng(seed)
    parts = [("shared", ("shared",))] + [(n, ("tasks", n)) for n in sorted(params["tasks"])]
    for part, keys in parts:
        subtree = params[keys[0]] if len(keys) == 1 else params[keys[0]][keys[1]]
        flat, treedef = jax.tree_util.tree_flatten_with_path(subtree)
        for index, (path, leaf) in enumerate(flat):
            leaves = [value for _, value in flat]
            value = np.asarray(leaf)  # numpy: eager jax ops would compile once per shape
            noise = rng.normal(size=value.shape) * (0.5 + np.std(value))
            leaves[index] = jnp.asarray(np.asarray(value + noise, leaf.dtype))
            changed = jax.tree_util.tree_unflatten(treedef, leaves)
            if part == "shared":
                yield part, path, {**params, "shared": changed}
            else:
                yield part, path, {**params, "tasks": {**params["tasks"], part: changed}}


def check_architecture(model: MultiTaskModel, tasks, variables, image) -> dict:
    """The contract every architecture meets; returns the predictions.

    * variables are split `{"shared", "tasks": {name}}` for params and batch statistics;
    * predictions are float32, finite and shaped like each task's `output_shape`;
    * `apply_shared` followed by `apply_head` equals `apply` (training mode, same dropout
      key: predictions and updated statistics);
    * ownership, by perturbing one parameter leaf at a time (evaluation mode, so that no
      bias is hidden by a following BatchNorm): every shared leaf changes every task's
      prediction, and every leaf of `tasks[t]` changes task t's prediction and no other —
      nothing task-owned sits under "shared", and every head is complete.
    """
    names = model.task_names
    params, stats = variables["params"], variables["batch_stats"]
    assert sorted(params) == ["shared", "tasks"] and sorted(stats) == ["shared", "tasks"]
    assert tuple(sorted(params["tasks"])) == names == tuple(sorted(stats["tasks"]))
    assert names == tuple(sorted(tasks))
    key = jax.random.PRNGKey(7)

    @jax.jit
    def train_forward(variables):
        params, stats = variables["params"], variables["batch_stats"]
        preds, new_stats = model.apply(variables, image, train=True, rng=key)
        rep, shared_stats = model.apply_shared(
            params["shared"], stats["shared"], image, train=True, rng=key
        )
        composed, task_stats = {}, {}
        for name in names:
            composed[name], task_stats[name] = model.apply_head(
                name, params["tasks"][name], stats["tasks"][name], rep, train=True, rng=key
            )
        return preds, new_stats, composed, {"shared": shared_stats, "tasks": task_stats}

    preds, new_stats, composed, composed_stats = train_forward(variables)
    for name in names:
        assert preds[name].dtype == jnp.float32, name
        assert preds[name].shape == (image.shape[0], *tasks[name].output_shape), name
        assert np.all(np.isfinite(preds[name])), name
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
        (preds, new_stats),
        (composed, composed_stats),
    )

    # Running statistics equal to this batch's (BatchNorm momentum 0.9), so that evaluation
    # normalises like training: random statistics can saturate sigmoids and hide leaves.
    calibrated = jax.tree.map(
        lambda new, old: (np.asarray(new) - 0.9 * np.asarray(old)) / 0.1, new_stats, stats
    )
    evaluate = jax.jit(lambda p: model.apply({"params": p, "batch_stats": calibrated}, image)[0])
    base = evaluate(params)
    for part, path, changed in _leaf_perturbations(params):
        out = evaluate(changed)
        moved = {name for name in names if not np.array_equal(out[name], base[name])}
        expected = set(names) if part == "shared" else {part}
        where = f"{part}{jax.tree_util.keystr(path)}"
        assert moved == expected, f"perturbing {where} moved the predictions of {sorted(moved)}"
    return preds


# --- Workloads W1–W3 (WORKLOADS.md) and the seed's model -----------------------------------


def test_lenet_matches_w1():
    """W1: shared 21,330 parameters, 3,060 per head, 27,450 in total."""
    tasks = {"L": Classification("L"), "R": Classification("R")}
    model = build_model("lenet", tasks, head_hidden=(50,))
    image = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)["params"]
    assert count(params["shared"]) == 21_330
    assert {name: count(p) for name, p in params["tasks"].items()} == {"L": 3_060, "R": 3_060}
    assert count(params) == 27_450


def test_small_resnet_matches_w2_and_w3():
    """W2: shared 307,360; heads 73,792 + 845 / 65 / 195. W3: heads 129 each."""
    image = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    dense = {
        "segmentation": Boundary("segmentation", 64, 64),
        "depth": Boundary("depth", 64, 64),
    }
    model = build_model("small_resnet", dense, dense_head_hidden=64)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)
    assert count(variables["params"]["shared"]) == 307_360
    # A 1-channel dense head: 3×3×128×64 + 64 (conv) + 64 + 1 (1×1 conv) = 73,857.
    assert count(variables["params"]["tasks"]["depth"]) == 73_792 + 65
    assert variables["batch_stats"]["shared"], "BatchNorm statistics live under 'shared'"
    pooled = build_model("small_resnet_pooled", {"a": BinaryLabels("a", 1)}, head_hidden=())
    params = jax.eval_shape(pooled.init, jax.random.PRNGKey(0), image)["params"]
    assert count(params["shared"]) == 307_360
    assert count(params["tasks"]["a"]) == 129


def test_seed_cnn_shapes():
    tasks = {"shape": Classification("shape", 10), "boundary": Boundary("boundary", 32, 32)}
    model = build_model("seed_cnn", tasks, head_hidden=(128,), dense_head_hidden=16)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
    shared = variables["params"]["shared"]
    assert shared["Conv_0"]["kernel"].shape == (3, 3, 3, 16)
    assert shared["Conv_1"]["kernel"].shape == (3, 3, 16, 32)
    assert variables["params"]["tasks"]["shape"]["Dense_0"]["kernel"].shape == (8 * 8 * 32, 128)
    preds, _ = model.apply(variables, jnp.zeros((2, 32, 32, 3)))
    assert preds["shape"].shape == (2, 10) and preds["boundary"].shape == (2, 32, 32, 1)


def test_seed_cnn_meets_the_architecture_contract():
    tasks = {"shape": Classification("shape", 10), "boundary": Boundary("boundary", 32, 32)}
    model = build_model("seed_cnn", tasks, head_hidden=(16,), dense_head_hidden=8)
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    check_architecture(model, tasks, random_variables(model, image), image)


def test_patch_conv_equals_native_convolution():
    from mtl_jax.models.trunks import PatchConv

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 12, 10, 4))
    patch = PatchConv(6, (5, 3))
    params = patch.init(jax.random.PRNGKey(1), x)
    native = nn.Conv(6, (5, 3), padding="VALID")
    np.testing.assert_allclose(
        patch.apply(params, x), native.apply(params, x), rtol=1e-5, atol=1e-5
    )


# --- The FAMO CelebA CNN ---------------------------------------------------------------------


def test_celeba_cnn_matches_famo():
    """FAMO's CelebA `Network` (experiments/celeba/models.py of the FAMO repository).

    Counted from its layer list: seven bias-free 3×3 convolutions
    3→64→128→128→256→256→512→512 (4,646,592) with BatchNorm (2 × 1,856 = 3,712), two
    bias-free Linear(512, 512) (524,288) with BatchNorm1d (2,048): 5,176,640 shared;
    40 heads Linear(512, 1) of 513; 5,197,160 in total.
    """
    tasks = {f"attr{i:02d}": BinaryLabels(f"attr{i:02d}", 1) for i in range(40)}
    model = build_model("celeba_cnn", tasks, head_hidden=())
    image = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)["params"]
    assert count(params["shared"]) == 4_646_592 + 3_712 + 524_288 + 2_048 == 5_176_640
    assert {count(p) for p in params["tasks"].values()} == {513}
    assert count(params) == 5_197_160


def test_celeba_cnn_meets_the_architecture_contract():
    tasks = {"a": BinaryLabels("a", 1), "b": BinaryLabels("b", 1)}
    model = build_model("celeba_cnn", tasks, head_hidden=(), width_multiplier=1 / 16)
    image = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
    check_architecture(model, tasks, random_variables(model, image), image)


# --- build_model ------------------------------------------------------------------------------


def test_build_model_defaults_to_hard_parameter_sharing():
    tasks = {"L": Classification("L"), "R": Classification("R")}
    model = build_model("lenet", tasks)
    assert model.tied == () and set(model.heads) == {"L", "R"}
    assert set(ARCHITECTURES) == {
        "hps", "mtan", "cross_stitch", "mmoe", "cgc", "ple", "dselect_k", "ltb"
    }  # fmt: skip
    assert {"lenet", "seed_cnn", "small_resnet", "small_resnet_pooled"} <= set(TRUNKS)


@pytest.mark.parametrize(
    ("trunk", "architecture", "tasks", "kwargs", "message"),
    [
        ("vgg", "hps", {"a": Classification("a")}, {}, "unknown trunk 'vgg'"),
        ("lenet", "moe", {"a": Classification("a")}, {}, "unknown architecture 'moe'"),
        ("lenet", "mtan", {"a": Classification("a")}, {}, "does not support trunk 'lenet'"),
        ("seed_cnn", "cross_stitch", {"a": Classification("a")}, {}, "supported trunks"),
        ("segnet", "hps", {"a": Classification("a")}, {}, "task 'a': SegNet only has heads"),
        ("segnet", "mtan", {"a": Classification("a")}, {}, "task 'a': SegNet-MTAN only"),
        ("lenet", "hps", {"a": Classification("a")}, {"dtype": "int8"}, "dtype must be"),
        ("lenet", "hps", {"a": Classification("a")}, {"dtype": "bf16x"}, "dtype must be"),
        ("lenet", "hps", {"a": Classification("a")}, {"width_multiplier": 0.5}, "fixed size"),
        ("resnet18", "hps", {"a": Classification("a")}, {"aspp_dropout": 1.0}, "aspp_dropout"),
        ("lenet", "mmoe", {"a": Classification("a")}, {"num_experts": 0}, "num_experts"),
        ("lenet", "cgc", {"a": Classification("a")}, {"num_task_experts": 0}, "num_task_"),
        ("seed_cnn", "ple", {"a": Classification("a")}, {}, "supported trunks"),
        ("lenet", "dselect_k", {"a": Classification("a")}, {"dselect_k": 9}, "dselect_k"),
        ("lenet", "ltb", {"a": Classification("a")}, {"ltb_levels": 9}, "ltb_levels"),
        ("lenet", "hps", {}, {}, "at least one task"),
    ],
)
def test_build_model_rejects_bad_arguments(trunk, architecture, tasks, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(trunk, tasks, architecture=architecture, **kwargs)


def test_init_names_the_task_whose_head_cannot_be_built():
    tasks = {"depth": Depth("depth", height=64, width=64)}
    model = build_model("segnet", tasks, width_multiplier=1 / 16)
    image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"task 'depth': SegNet predicts at the input"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), image)


# --- Mixed precision ----------------------------------------------------------------------


@pytest.mark.parametrize(("trunk", "architecture"), [("seed_cnn", "hps"), ("segnet", "mtan")])
def test_bfloat16_model_keeps_float32_parameters_and_losses(trunk, architecture):
    """bf16 computation: float32 parameters and statistics, bf16 activations, f32 losses."""
    tasks = {
        "seg": Segmentation("seg", 3, height=32, width=32),
        "depth": Depth("depth", height=32, width=32),
    }
    kwargs = {} if trunk == "seed_cnn" else {"width_multiplier": 1 / 16}
    model = build_model(trunk, tasks, architecture=architecture, dtype="bfloat16", **kwargs)
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    variables = random_variables(model, image)
    targets = {
        "seg": jnp.zeros((2, 32, 32), jnp.int32),
        "depth": jnp.ones((2, 32, 32, 1), jnp.float32),
    }

    @jax.jit
    def run(variables):
        params, stats = variables["params"], variables["batch_stats"]
        rep, new_stats = model.apply_shared(
            params["shared"], stats["shared"], image, train=True, rng=jax.random.PRNGKey(0)
        )
        preds, losses = {}, {}
        for name in model.task_names:
            preds[name], _ = model.apply_head(
                name,
                params["tasks"][name],
                stats["tasks"][name],
                rep,
                train=True,
                rng=jax.random.PRNGKey(0),
            )
            values, mask = tasks[name].loss(preds[name], targets[name], jnp.ones(2, bool))
            losses[name] = masked_mean(values, mask)
        return rep, new_stats, preds, losses

    rep, new_stats, preds, losses = run(variables)
    features = rep["features"] if model.tied else rep
    assert {leaf.dtype for leaf in jax.tree.leaves(features)} == {jnp.dtype(jnp.bfloat16)}
    if model.tied:  # the tied weights travel in float32
        assert {leaf.dtype for leaf in jax.tree.leaves(rep["tied"])} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in jax.tree.leaves(new_stats)} <= {jnp.dtype(jnp.float32)}
    for name in model.task_names:
        assert preds[name].dtype == jnp.float32
        assert losses[name].dtype == jnp.float32 and np.isfinite(losses[name])


def test_bfloat16_predictions_track_float32():
    tasks = {"depth": Depth("depth", height=32, width=32)}
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    f32 = build_model("segnet", tasks, width_multiplier=1 / 8)
    bf16 = build_model("segnet", tasks, width_multiplier=1 / 8, dtype=jnp.bfloat16)
    variables = random_variables(f32, image)
    expected, _ = jax.jit(lambda v: f32.apply(v, image))(variables)
    actual, _ = jax.jit(lambda v: bf16.apply(v, image))(variables)
    scale = float(np.max(np.abs(expected["depth"])))
    np.testing.assert_allclose(actual["depth"], expected["depth"], atol=0.05 * scale)


# --- Dropout randomness ---------------------------------------------------------------------


def test_dropout_needs_a_key_in_training_and_streams_differ_per_head():
    tasks = {"a": Depth("a", height=32, width=32), "b": Depth("b", height=32, width=32)}
    model = build_model("resnet18", tasks, width_multiplier=1 / 16)
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    variables = random_variables(model, image)
    with pytest.raises(ValueError, match="the head of task 'a' uses dropout"):
        jax.eval_shape(lambda v: model.apply(v, image, train=True), variables)
    apply = jax.jit(lambda v, key: model.apply(v, image, train=True, rng=key)[0])
    first = apply(variables, jax.random.PRNGKey(0))
    again = apply(variables, jax.random.PRNGKey(0))
    other = apply(variables, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(first["a"], again["a"])
    assert not np.allclose(first["a"], other["a"])
    # Heads share the parameters here, so equal outputs would mean one dropout mask.
    shared_head = {**variables, "params": {**variables["params"]}}
    shared_head["params"]["tasks"] = {n: variables["params"]["tasks"]["a"] for n in "ab"}
    shared_head["batch_stats"] = {
        "shared": variables["batch_stats"]["shared"],
        "tasks": {n: variables["batch_stats"]["tasks"]["a"] for n in "ab"},
    }
    both = apply(shared_head, jax.random.PRNGKey(0))
    assert not np.allclose(both["a"], both["b"])
    # Evaluation needs no key.
    evaluated, _ = jax.eval_shape(lambda v: model.apply(v, image, train=False), variables)
    assert evaluated["a"].shape == (2, 32, 32, 1)


# --- Tied head modules --------------------------------------------------------------------


def test_tied_modules_are_stored_once_under_shared():
    tasks = {
        "seg": Segmentation("seg", 3, height=32, width=32),
        "depth": Depth("depth", height=32, width=32),
    }
    model = build_model("segnet", tasks, architecture="mtan", width_multiplier=1 / 16)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    (tied,) = model.tied
    assert tied in shapes["params"]["shared"]
    for name in model.task_names:
        assert tied not in shapes["params"]["tasks"][name]
        # Running statistics of the tied blocks are kept per task.
        assert tied in shapes["batch_stats"]["tasks"][name]
    assert tied not in shapes["batch_stats"]["shared"]


def test_tied_modules_must_exist_and_not_clash():
    tasks = {"a": Classification("a")}
    base = build_model("lenet", tasks)
    image = jnp.zeros((1, 28, 28, 1))
    missing = MultiTaskModel(base.trunk, base.heads, tied=("gate",))
    with pytest.raises(ValueError, match="task 'a': head has no tied module 'gate'"):
        jax.eval_shape(missing.init, jax.random.PRNGKey(0), image)
    clash = MultiTaskModel(base.trunk, base.heads, tied=("Dense_0",))
    with pytest.raises(ValueError, match=r"clash with trunk parameter names"):
        jax.eval_shape(clash.init, jax.random.PRNGKey(0), image)


class _TinyTrunk(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = True):
        return nn.tanh(nn.Dense(6)(x.reshape(x.shape[0], -1)))


class _TinyAttentionHead(nn.Module):
    """An MTAN-like head: own mask, a tied block shared by all tasks, own output layer."""

    num_outputs: int

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        mask = nn.sigmoid(nn.Dense(6, name="attention")(rep))
        hidden = nn.tanh(nn.Dense(5, name="shared_blocks")(mask * rep))
        return nn.Dense(self.num_outputs, name="output")(hidden)


def test_gradient_engine_covers_tied_weights():
    """Per-task Jacobian rows include the tied weights and equal plain `jax.grad`."""
    tasks = {"a": Classification("a", 3), "b": Classification("b", 4)}
    heads = {name: _TinyAttentionHead(task.num_classes) for name, task in tasks.items()}
    model = MultiTaskModel(_TinyTrunk(), heads, tied=("shared_blocks",))
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.normal(size=(8, 2, 2, 1)), jnp.float32)
    batch = {
        "image": image,
        "targets": {
            "a": jnp.asarray(rng.integers(0, 3, 8)),
            "b": jnp.asarray(rng.integers(0, 4, 8)),
        },
    }
    variables = model.init(jax.random.PRNGKey(0), image)
    params, stats = variables["params"], variables["batch_stats"]
    assert sorted(params["shared"]) == ["Dense_0", "shared_blocks"]
    pullbacks = jacobian.forward_with_pullbacks(model, tasks, params, stats, batch)
    rows = jacobian.shared_jacobian(pullbacks)
    for index, name in enumerate(model.task_names):

        def loss(p, name=name):
            preds, _ = model.apply({"params": p, "batch_stats": stats}, image, train=True)
            values, mask = tasks[name].loss(preds[name], batch["targets"][name], jnp.ones(8, bool))
            return masked_mean(values, mask)

        expected = jax.grad(loss)(params)
        row = jax.tree.map(lambda leaf, i=index: leaf[i], rows)
        jax.tree.map(
            lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7),
            (row, pullbacks.head_grads[name]),
            (expected["shared"], expected["tasks"][name]),
        )
        assert np.any(np.asarray(row["shared_blocks"]["kernel"]) != 0)


# --- Layers -------------------------------------------------------------------------------


def test_max_pool_with_indices_and_unpool_follow_torch():
    """First maximum in row-major window order wins; unpooling puts values back there."""
    x = np.array([[1.0, 3.0, 2.0, 2.0], [3.0, 0.0, 2.0, 2.0], [0, 0, 5, 1], [0, -1, 4, 5]])
    x = jnp.asarray(x)[None, :, :, None]
    pooled, indices = layers.max_pool_with_indices(x)
    np.testing.assert_array_equal(pooled[0, :, :, 0], [[3.0, 2.0], [0.0, 5.0]])
    np.testing.assert_array_equal(indices[0, :, :, 0], [[1, 0], [0, 0]])
    unpooled = layers.max_unpool(pooled, indices)[0, :, :, 0]
    expected = np.array([[0, 3, 2, 0], [0, 0, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0]], float)
    np.testing.assert_array_equal(unpooled, expected)
    # The gradient goes to the chosen position only, also for tied maxima.
    grad = jax.grad(lambda y: jnp.sum(layers.max_pool_with_indices(y)[0]))(x)[0, :, :, 0]
    np.testing.assert_array_equal(grad, [[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


def _bilinear_align_corners_reference(image: np.ndarray, height: int, width: int):
    """Per-pixel formula of `F.interpolate(mode="bilinear", align_corners=True)`."""
    h, w = image.shape
    out = np.zeros((height, width))
    for i in range(height):
        for j in range(width):
            y = i * (h - 1) / (height - 1) if height > 1 else 0.0
            x = j * (w - 1) / (width - 1) if width > 1 else 0.0
            y0, x0 = min(int(y), h - 1), min(int(x), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = (
                image[y0, x0] * (1 - dy) * (1 - dx)
                + image[y0, x1] * (1 - dy) * dx
                + image[y1, x0] * dy * (1 - dx)
                + image[y1, x1] * dy * dx
            )
    return out


@pytest.mark.parametrize(
    ("size_in", "size_out"), [((3, 4), (6, 8)), ((5, 2), (7, 1)), ((1, 3), (2, 9))]
)
def test_resize_align_corners_matches_the_bilinear_formula(size_in, size_out):
    image = np.random.default_rng(0).normal(size=size_in)
    actual = layers.resize_align_corners(jnp.asarray(image)[None, :, :, None], size_out)
    expected = _bilinear_align_corners_reference(image, *size_out)
    np.testing.assert_allclose(actual[0, :, :, 0], expected, rtol=1e-5, atol=1e-6)
