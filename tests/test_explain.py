"""Per-task saliency (`mtl_jax.explain.saliency`): gradient × input is `w ⊙ x` on linear
models, integrated gradients are complete, Grad-CAM lives on the trunk's last feature map
and is the paper's Eq. 1–2; and `mtl-jax explain` on a tiny trained run writes
saliency.png / saliency.json and refuses to overwrite them."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import explain as explain_main
from mtl_jax import cli
from mtl_jax import workdir as wd
from mtl_jax.explain import saliency as sal
from mtl_jax.explain.report import SALIENCY_JSON, SALIENCY_PNG
from mtl_jax.models import MultiTaskModel
from mtl_jax.models.heads import MLPHead
from mtl_jax.tasks import BinaryLabels, Boundary, Classification, Segmentation
from tests.helpers import multi_mnist_setup

# ---------------------------------------------------------------------------------------
# Small models.


class LinearConv(nn.Module):
    """A linear trunk with a spatial output: one 3×3 convolution, no activation."""

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        del train
        return nn.Conv(4, (3, 3), padding="SAME")(x)


class ConvReLU(nn.Module):
    """A nonlinear trunk whose own output is its last feature map."""

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        del train
        x = nn.tanh(nn.Conv(3, (3, 3), padding="SAME", name="first")(x))
        return nn.relu(nn.Conv(5, (3, 3), padding="SAME", name="last")(x))


class SmoothConv(nn.Module):
    """A smooth nonlinear trunk: tanh and softplus convolutions."""

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        del train
        x = nn.tanh(nn.Conv(3, (3, 3), padding="SAME")(x))
        return nn.softplus(nn.Conv(4, (3, 3), padding="SAME")(x))


class Flat(nn.Module):
    """A trunk with no spatial output."""

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        del train
        return nn.Dense(6)(x.reshape((x.shape[0], -1)))


def _model(trunk, num_classes=(3, 4), hidden=()):
    tasks = {f"t{i}": Classification(f"t{i}", num_classes=n) for i, n in enumerate(num_classes)}
    heads = {name: MLPHead(hidden=hidden, num_outputs=t.num_classes) for name, t in tasks.items()}
    return tasks, MultiTaskModel(trunk=trunk, heads=heads)


def _images(n=3, size=6, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((n, size, size, 1)), jnp.float32)


def _noisy_biases(variables, seed=1):
    """Nonzero biases, so that a ReLU network is not positively homogeneous (which would
    make integrated gradients from the zero baseline exact for any number of steps)."""
    key = jax.random.PRNGKey(seed)

    def perturb(path, leaf):
        if jax.tree_util.keystr(path).endswith("['bias']"):
            return leaf + 0.1 * jax.random.normal(jax.random.fold_in(key, leaf.size), leaf.shape)
        return leaf

    return {
        "params": jax.tree_util.tree_map_with_path(perturb, variables["params"]),
        "batch_stats": variables["batch_stats"],
    }


# ---------------------------------------------------------------------------------------
# gradient × input


def test_gradient_x_input_of_a_linear_function_is_w_times_x():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(4, 5, 5, 2)), jnp.float32)

    def f(batch):
        return jnp.sum(w * batch, axis=(1, 2, 3)) + 3.0

    np.testing.assert_array_equal(np.asarray(sal.gradient_x_input(f, x)), np.asarray(w * x))


def test_gradient_x_input_of_a_linear_model_is_w_times_x():
    """Per task, the weights of the predicted class's logit, read off by probing the model
    with basis images, times the input."""
    tasks, model = _model(LinearConv())
    x = _images()
    variables = model.init(jax.random.PRNGKey(0), x)
    result = sal.task_saliency(model, tasks, variables, x, methods=("gradient_x_input",))
    logits, _ = model.apply(variables, x)
    basis = jnp.eye(x[0].size, dtype=jnp.float32).reshape((-1, *x.shape[1:]))
    zero = jnp.zeros((1, *x.shape[1:]), jnp.float32)
    for name in tasks:
        probe = model.apply(variables, basis)[0][name] - model.apply(variables, zero)[0][name]
        predicted = np.argmax(np.asarray(logits[name]), axis=-1)
        w = np.asarray(probe)[:, predicted].T.reshape(x.shape)  # [N, H, W, C]
        np.testing.assert_allclose(
            result.maps["gradient_x_input"][name], w * np.asarray(x), rtol=1e-4, atol=1e-6
        )
        # Linear, zero baseline: integrated gradients are gradient × input.
    both = sal.task_saliency(
        model, tasks, variables, x, methods=("gradient_x_input", "integrated_gradients"), steps=4
    )
    for name in tasks:
        np.testing.assert_allclose(
            both.maps["integrated_gradients"][name],
            both.maps["gradient_x_input"][name],
            rtol=1e-5,
            atol=1e-7,
        )


# ---------------------------------------------------------------------------------------
# integrated gradients


def test_riemann_nodes():
    alphas, weights = sal.riemann_nodes(4, "midpoint")
    np.testing.assert_allclose(alphas, [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(weights, [0.25] * 4)
    alphas, weights = sal.riemann_nodes(4, "trapezoid")
    np.testing.assert_allclose(alphas, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])
    with pytest.raises(ValueError, match="positive integer"):
        sal.riemann_nodes(0)
    with pytest.raises(ValueError, match="rule must be one of"):
        sal.riemann_nodes(4, "simpson")


@pytest.mark.parametrize("rule", sal.RULES)
def test_integrated_gradients_are_complete_on_a_smooth_function(rule):
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.normal(size=(12, 7)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(7,)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(5, 12)), jnp.float32)
    baseline = jnp.asarray(rng.normal(size=(5, 12)), jnp.float32)

    def f(batch):
        return jnp.tanh(batch @ a) @ v + jnp.sum(jax.nn.softplus(batch), axis=1)

    ig = sal.integrated_gradients(f, x, baseline=baseline, steps=64, rule=rule)
    gap = f(x) - f(baseline)
    np.testing.assert_allclose(np.asarray(ig.sum(axis=1)), np.asarray(gap), rtol=1e-2)
    # Few steps are visibly worse: the sum is a quadrature, not an identity.
    coarse = sal.integrated_gradients(f, x, baseline=baseline, steps=1, rule=rule)
    assert np.abs(coarse.sum(axis=1) - gap).max() > np.abs(ig.sum(axis=1) - gap).max()


@pytest.mark.parametrize("rule", sal.RULES)
def test_integrated_gradients_are_complete_on_a_small_model(rule):
    """Every task of a small smooth MultiTaskModel: the attributions sum to
    f(x) − f(black image) within 1% (64 steps)."""
    tasks, model = _model(SmoothConv())
    x = _images(n=4, size=7)
    variables = _noisy_biases(model.init(jax.random.PRNGKey(4), x))
    result = sal.task_saliency(
        model, tasks, variables, x, methods=("integrated_gradients",), steps=64, rule=rule
    )
    for name in tasks:
        gap = result.scalars[name] - result.baseline_scalars[name]
        assert np.all(np.abs(gap) > 1e-2), gap  # a meaningful test
        total = result.maps["integrated_gradients"][name].reshape(4, -1).sum(axis=1)
        np.testing.assert_allclose(total, gap, rtol=1e-2)
        assert result.completeness()[name]["max_relative_error"] < 1e-2


def test_integrated_gradients_converge_on_lenet():
    """ReLU and max-pool make the path's gradient piecewise constant: the sum converges
    more slowly than on a smooth model, but it does converge (saliency.json reports the
    error of a run's maps)."""
    tasks, model, variables, batch = multi_mnist_setup(batch_size=4)
    variables = _noisy_biases(variables)

    def errors(steps):
        result = sal.task_saliency(
            model, tasks, variables, batch["image"], methods=("integrated_gradients",), steps=steps
        )
        return {name: e["max_abs_error"] for name, e in result.completeness().items()}

    coarse, fine = errors(8), errors(256)
    for name in tasks:
        assert fine[name] < 0.5 * coarse[name], (name, coarse, fine)


# ---------------------------------------------------------------------------------------
# Grad-CAM


def test_grad_cam_is_eq_1_and_2():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    grads = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    alphas = grads.mean(axis=(1, 2))  # Eq. 1: [B, K]
    expected = np.maximum(np.einsum("bk,bhwk->bhw", alphas, features), 0.0)  # Eq. 2
    np.testing.assert_allclose(np.asarray(sal.grad_cam(features, grads)), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="feature map"):
        sal.grad_cam(features[0], grads[0])


def test_grad_cam_on_lenet_has_conv_1s_shape_and_is_deterministic():
    tasks, model, variables, batch = multi_mnist_setup(batch_size=4)
    layer = sal.last_spatial_layer(model, variables, batch["image"])
    assert layer.path == ("Conv_1",) and layer.name == "Conv_1"
    assert layer.shape == (4, 8, 8, 20)
    first, second = (
        sal.task_saliency(model, tasks, variables, batch["image"], methods=("grad_cam",))
        for _ in range(2)
    )
    for name in tasks:
        cam = first.maps["grad_cam"][name]
        assert cam.shape == (4, 8, 8) and np.all(cam >= 0)
        np.testing.assert_array_equal(cam, second.maps["grad_cam"][name])


def test_grad_cam_uses_the_gradient_at_the_feature_map():
    """A trunk whose output is its last feature map: Grad-CAM equals Eq. 1–2 applied to
    the representation and the head's gradient w.r.t. it, computed directly."""
    tasks, model = _model(ConvReLU(), hidden=(8,))
    x = _images(size=5)
    variables = _noisy_biases(model.init(jax.random.PRNGKey(3), x))
    layer = sal.last_spatial_layer(model, variables, x)
    assert layer.path == () and layer.name == "<trunk output>" and layer.shape == (3, 5, 5, 5)
    result = sal.task_saliency(model, tasks, variables, x, methods=("grad_cam",))
    params, stats = variables["params"], variables["batch_stats"]
    rep, _ = model.apply_shared(params["shared"], stats["shared"], x, train=False)
    for name, task in tasks.items():

        def head_scalar(r, name=name, task=task):
            pred, _ = model.apply_head(
                name, params["tasks"][name], stats["tasks"][name], r, train=False
            )
            return jnp.sum(sal.task_scalar(task, pred))

        expected = sal.grad_cam(rep, jax.grad(head_scalar)(rep))
        np.testing.assert_allclose(result.maps["grad_cam"][name], expected, rtol=1e-5, atol=1e-7)
        assert np.any(expected > 0)


def test_a_trunk_without_a_spatial_map_is_a_clear_error():
    tasks, model = _model(Flat())
    x = _images()
    variables = model.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=r"no module of the trunk Flat returns a 4-D"):
        sal.task_saliency(model, tasks, variables, x)
    # The gradient methods need no feature map.
    result = sal.task_saliency(model, tasks, variables, x, methods=("gradient_x_input",))
    assert result.layer is None and set(result.maps) == {"gradient_x_input"}


# ---------------------------------------------------------------------------------------
# What is explained, and the overlap of two tasks' maps


def test_task_scalars():
    logits = jnp.array([[0.5, 2.0, -1.0], [3.0, 0.0, 1.0]])
    np.testing.assert_allclose(sal.task_scalar(Classification("c", 3), logits), [2.0, 3.0])
    labels = jnp.array([[1.5, -2.0], [-0.5, -1.0]])
    np.testing.assert_allclose(sal.task_scalar(BinaryLabels("b", 2), labels), [3.5, 1.5])
    pixel_logits = jnp.stack([jnp.ones((2, 2)), 2 * jnp.eye(2)], axis=-1)[None]  # [1, 2, 2, 2]
    segmentation = Segmentation("s", height=2, width=2, num_classes=2)
    np.testing.assert_allclose(sal.task_scalar(segmentation, pixel_logits), [1.5])
    edges = jnp.arange(4.0).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(sal.task_scalar(Boundary("e", 2, 2), edges), [1.5])
    # The choice can come from another prediction (the explained image's, on a path).
    reference = jnp.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(sal.task_scalar(Classification("c", 3), logits, reference), [-1, 0])
    np.testing.assert_allclose(sal.task_scalar(BinaryLabels("b", 2), labels, -labels), [-3.5, -1.5])
    # The chosen class is fixed: only its logit's gradient flows.
    grad = jax.grad(lambda z: sal.task_scalar(Classification("c", 3), z).sum())(logits)
    np.testing.assert_array_equal(grad, [[0, 1, 0], [1, 0, 0]])


def test_overlap_is_the_cosine_of_the_magnitude_maps():
    a = np.zeros((3, 2, 2, 1))
    a[:, 0, 0] = 1.0
    b = -a.copy()  # same pixels, opposite sign: |.| makes them identical
    c = np.zeros((3, 2, 2, 1))
    c[:, 1, 1] = 2.0  # disjoint pixels
    c[2] = 0.0  # an all-zero map: no cosine for that image
    table = sal.overlap({"a": a, "b": b, "c": c})
    assert table["a"]["b"] == {"mean": 1.0, "std": 0.0, "images": 3, "per_image": [1.0] * 3}
    assert table["a"]["c"]["per_image"] == [0.0, 0.0, None]
    assert table["a"]["c"]["images"] == 2 and table["a"]["c"]["mean"] == 0.0
    assert set(table) == {"a", "b"} and set(table["b"]) == {"c"}
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 1, 4, 4, 3))
    mx, my = np.abs(x).sum(-1).ravel(), np.abs(y).sum(-1).ravel()
    expected = mx @ my / np.linalg.norm(mx) / np.linalg.norm(my)
    assert sal.map_cosines(x, y)[0] == pytest.approx(expected)


# ---------------------------------------------------------------------------------------
# The entry points on a tiny trained run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_multi_mnist):
    """`mtl-jax train --config test` for 3 steps, in process."""
    workdir = tmp_path_factory.mktemp("explain") / "run"
    argv = ["train", "--config", "test", "--workdir", str(workdir), "--no-progress"]
    assert cli.main([*argv, "--config.num_steps=3"]) == 0
    return workdir


def test_explain_writes_the_grid_and_the_overlaps_and_never_overwrites(trained_run, capsys):
    workdir = trained_run
    for name in (SALIENCY_PNG, SALIENCY_JSON):
        (workdir / name).unlink(missing_ok=True)
    argv = ["explain", "--workdir", str(workdir), "--examples", "4", "--steps", "16"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "left · right" in out and "grad_cam" in out
    assert (workdir / SALIENCY_PNG).stat().st_size > 10_000
    summary = json.loads((workdir / SALIENCY_JSON).read_text())
    assert summary["examples"] == [0, 1, 2, 3] and summary["split"] == "test"
    assert summary["tasks"] == ["boundary", "left", "right"]
    assert summary["methods"] == list(sal.METHODS)
    assert summary["grad_cam"] == {"layer": "Conv_1", "feature_shape": [8, 8, 20]}
    assert summary["explained"]["left"] == "logit of the predicted class"
    ig = summary["integrated_gradients"]
    assert ig["steps"] == 16 and ig["rule"] == "midpoint"
    assert set(ig["completeness"]) == {"boundary", "left", "right"}
    for method in sal.METHODS:
        table = summary["overlap"][method]
        assert set(table) == {"boundary", "left"} and set(table["left"]) == {"right"}
        cell = table["left"]["right"]
        assert set(cell) == {"mean", "std", "images", "per_image"} and len(cell["per_image"]) == 4
        assert cell["images"] == 0 or -1e-9 <= cell["mean"] <= 1 + 1e-9

    # A second run refuses, and changes nothing.
    before = {n: (workdir / n).read_bytes() for n in (SALIENCY_PNG, SALIENCY_JSON)}
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds" in err and "--overwrite" in err
    assert before == {n: (workdir / n).read_bytes() for n in before}
    # Deterministic: the same examples and maps again, with --overwrite.
    assert cli.main([*argv, "--overwrite"]) == 0
    assert json.loads((workdir / SALIENCY_JSON).read_text()) == summary


def test_explain_launcher_options_and_errors(trained_run, tmp_path, capsys):
    workdir = trained_run
    argv = ["--workdir", str(workdir), "--examples", "2", "--steps", "4", "--overwrite"]
    assert explain_main.main([*argv, "--tasks", "left,right", "--rule", "trapezoid", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tasks"] == ["left", "right"] and summary["examples"] == [0, 1]
    assert summary["integrated_gradients"]["rule"] == "trapezoid"
    assert set(summary["overlap"]["grad_cam"]) == {"left"}
    assert explain_main.main([*argv, "--tasks", "middle"]) == 2
    assert "unknown task(s) ['middle']" in capsys.readouterr().err
    assert explain_main.main([*argv[:2], "--examples", "0", "--overwrite"]) == 2
    assert explain_main.main(["--workdir", str(tmp_path / "missing")]) == 2
    assert "not the workdir of a finished run" in capsys.readouterr().err


def test_a_fresh_run_in_the_workdir_removes_the_explanations(tmp_path):
    """`train --overwrite` treats them like the run's other outputs."""
    from experiments.configs import base

    config = base.get_config()
    wd.start_workdir(tmp_path, config)
    for name in (SALIENCY_PNG, SALIENCY_JSON, "conflict_by_layer.png"):
        (tmp_path / name).write_text("x")
    wd.start_workdir(tmp_path, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == [wd.CONFIG_FILE]
