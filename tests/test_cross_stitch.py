"""Cross-stitch networks on dilated ResNets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models import build_model
from mtl_jax.models.cross_stitch import stitch_matrix
from mtl_jax.tasks import BinaryLabels, Depth, Segmentation
from tests.test_models import check_architecture, count, random_variables
from tests.test_resnet import RESNET18, _aspp_head, _basic, _bn

# ResNet-18's last stage: a projecting BasicBlock 256 → 512 and a plain one.
LAYER4_18 = _basic(256, 512) + 2 * (9 * 512 * 512 + _bn(512))


def _tasks(height, width):
    return {
        "depth": Depth("depth", height=height, width=width),
        "segmentation": Segmentation("segmentation", 13, height=height, width=width),
    }


def test_parameters():
    """T full ResNet columns, 3 units of T×T scalars, T DeepLab heads; split as documented."""
    tasks = _tasks(288, 384)
    model = build_model("resnet18", tasks, architecture="cross_stitch")
    image = jax.ShapeDtypeStruct((1, 288, 384, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)["params"]
    assert LAYER4_18 == 8_393_728
    assert count(params["shared"]) == 2 * (RESNET18 - LAYER4_18) + 2 * 2 * 2
    assert sorted(params["shared"]) == ["column_0", "column_1", "cross_stitch_0", "cross_stitch_1"]
    assert {name: count(p) for name, p in params["tasks"].items()} == {
        "depth": LAYER4_18 + 2 + _aspp_head(512, 1),
        "segmentation": LAYER4_18 + 2 + _aspp_head(512, 13),
    }
    assert count(params) == 2 * RESNET18 + 3 * 2 * 2 + _aspp_head(512, 1) + _aspp_head(512, 13)


def test_stitch_initialisation():
    """Misra et al.'s (α_S, α_D) = (0.9, 0.1), rows summing to one."""
    np.testing.assert_allclose(stitch_matrix(2), [[0.9, 0.1], [0.1, 0.9]])
    three = stitch_matrix(3)
    np.testing.assert_allclose(np.diag(three), 0.9)
    np.testing.assert_allclose(three.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(stitch_matrix(1), [[1.0]])


def test_identity_units_give_independent_single_task_networks():
    """With α = I every column is a plain ResNet + head, computing its task alone."""
    tasks = _tasks(32, 32)
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    model = build_model("resnet18", tasks, architecture="cross_stitch", width_multiplier=1 / 16)
    variables = random_variables(model, image)
    params, stats = variables["params"], variables["batch_stats"]
    names = model.task_names
    shared = {**params["shared"], "cross_stitch_0": jnp.eye(2), "cross_stitch_1": jnp.eye(2)}
    heads = {
        n: {**params["tasks"][n], "cross_stitch_2": jnp.eye(2)[i]} for i, n in enumerate(names)
    }
    stitched = {"params": {"shared": shared, "tasks": heads}, "batch_stats": stats}
    preds, _ = jax.jit(lambda v: model.apply(v, image))(stitched)
    for index, name in enumerate(names):
        single = build_model("resnet18", {name: tasks[name]}, width_multiplier=1 / 16)
        column, head = f"column_{index}", params["tasks"][name]
        alone = {
            "params": {
                "shared": {**params["shared"][column], "layers_3": head["layer4"]},
                "tasks": {name: head["decoder"]},
            },
            "batch_stats": {
                "shared": {**stats["shared"][column], "layers_3": stats["tasks"][name]["layer4"]},
                "tasks": {name: stats["tasks"][name]["decoder"]},
            },
        }
        expected, _ = jax.jit(lambda v, m=single: m.apply(v, image))(alone)
        np.testing.assert_allclose(preds[name], expected[name], rtol=1e-5, atol=1e-5)


def test_cross_stitch_meets_the_architecture_contract():
    tasks = {"depth": Depth("depth", height=32, width=32), "attr": BinaryLabels("attr", 2)}
    model = build_model(
        "resnet18", tasks, architecture="cross_stitch", width_multiplier=1 / 16, head_hidden=()
    )
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    check_architecture(model, tasks, random_variables(model, image), image)
