"""Architectures match their specifications (parameter counts from WORKLOADS.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models import build_model
from mtl_jax.tasks import BinaryLabels, Boundary, Classification


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_lenet_matches_w1():
    """W1: shared 21,330 parameters, 3,060 per head, 27,450 in total."""
    tasks = {"L": Classification("L"), "R": Classification("R")}
    model = build_model("lenet", tasks, head_hidden=(50,))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)))["params"]
    assert _count(params["shared"]) == 21_330
    assert {name: _count(p) for name, p in params["tasks"].items()} == {"L": 3_060, "R": 3_060}
    assert _count(params) == 27_450


def test_small_resnet_matches_w2_and_w3():
    """W2: shared 307,360; heads 73,792 + 845 / 65 / 195. W3: heads 129 each."""
    image = jnp.zeros((2, 64, 64, 3))
    dense = {
        "segmentation": Boundary("segmentation", 64, 64),
        "depth": Boundary("depth", 64, 64),
    }
    model = build_model("small_resnet", dense, dense_head_hidden=64)
    variables = model.init(jax.random.PRNGKey(0), image)
    assert _count(variables["params"]["shared"]) == 307_360
    # A 1-channel dense head: 3×3×128×64 + 64 (conv) + 64 + 1 (1×1 conv) = 73,857.
    assert _count(variables["params"]["tasks"]["depth"]) == 73_792 + 65
    assert variables["batch_stats"]["shared"], "BatchNorm statistics live under 'shared'"
    pooled = build_model("small_resnet_pooled", {"a": BinaryLabels("a", 1)}, head_hidden=())
    params = pooled.init(jax.random.PRNGKey(0), image)["params"]
    assert _count(params["shared"]) == 307_360
    assert _count(params["tasks"]["a"]) == 129


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


def test_patch_conv_equals_native_convolution():
    from flax import linen as nn

    from mtl_jax.models.trunks import PatchConv

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 12, 10, 4))
    patch = PatchConv(6, (5, 3))
    params = patch.init(jax.random.PRNGKey(1), x)
    native = nn.Conv(6, (5, 3), padding="VALID")
    np.testing.assert_allclose(
        patch.apply(params, x), native.apply(params, x), rtol=1e-5, atol=1e-5
    )
