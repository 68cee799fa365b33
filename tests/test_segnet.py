"""SegNet and SegNet-MTAN: parameter counts of the published models, the contract, shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.models import build_model
from mtl_jax.tasks import Depth, Segmentation, SurfaceNormal
from tests.test_models import check_architecture, count, random_variables

# The reference is the authors' `model_segnet_mtan.py` / `model_segnet_split.py`, reused by
# Nash-MTL (experiments/nyuv2/models.py: `SegNetMtan`, `SegNet`) and FAMO
# (experiments/cityscapes/models.py). The counts below are recomputed from those files'
# layer lists, independently of mtl_jax's modules.
F = (64, 128, 256, 512, 512)


def _conv_layer(cin, cout):  # Conv2d(3×3, bias) + BatchNorm2d (weight, bias)
    return 9 * cin * cout + cout + 2 * cout


def _att_layer(cin, mid, cout):  # Conv1×1 + BN + ReLU + Conv1×1 + BN + Sigmoid
    return cin * mid + mid + 2 * mid + mid * cout + cout + 2 * cout


def _pred(c, n):  # Conv2d(c, c, 3×3) + Conv2d(c, n, 1×1), both with bias
    return 9 * c * c + c + c * n + n


def _reference_counts():
    """(shared SegNet, MTAN's shared attention blocks, MTAN attention modules per task)."""
    encoder = _conv_layer(3, F[0]) + sum(_conv_layer(F[i], F[i + 1]) for i in range(4))
    decoder = _conv_layer(F[0], F[0]) + sum(_conv_layer(F[i + 1], F[i]) for i in range(4))
    conv_enc = _conv_layer(F[0], F[0]) + _conv_layer(F[1], F[1])
    conv_enc += sum(2 * _conv_layer(F[i + 1], F[i + 1]) for i in range(1, 4))
    conv_dec = _conv_layer(F[0], F[0]) + _conv_layer(F[0], F[0])
    conv_dec += sum(2 * _conv_layer(F[i], F[i]) for i in range(1, 4))
    segnet = encoder + decoder + conv_enc + conv_dec
    block_enc = _conv_layer(F[0], F[1]) + sum(_conv_layer(F[i + 1], F[i + 2]) for i in range(3))
    block_enc += _conv_layer(F[4], F[4])
    block_dec = _conv_layer(F[0], F[0]) + sum(_conv_layer(F[i + 1], F[i]) for i in range(3))
    block_dec += _conv_layer(F[4], F[4])
    attention = _att_layer(F[0], F[0], F[0]) + _att_layer(2 * F[0], F[0], F[0])
    attention += sum(_att_layer(2 * F[i + 1], F[i + 1], F[i + 1]) for i in range(4))
    attention += sum(_att_layer(F[i + 1] + F[i], F[i], F[i]) for i in range(4))
    return segnet, block_enc + block_dec, attention


def _nyuv2_tasks(height=288, width=384):
    return {
        "segmentation": Segmentation("segmentation", 13, height=height, width=width),
        "depth": Depth("depth", height=height, width=width),
        "normal": SurfaceNormal("normal", height=height, width=width),
    }


def _counts(model, shape):
    image = jax.ShapeDtypeStruct(shape, jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)["params"]
    return params, {name: count(p) for name, p in params["tasks"].items()}


def test_reference_counts():
    """The hand count agrees with the MTAN paper: MTAN has 1.77× one single-task SegNet.

    Table 3 of Liu et al. (CVPR 2019) lists "#P." relative to one standard single-task
    SegNet (here the 13-class one: shared network + prediction layer).
    """
    segnet, blocks, attention = _reference_counts()
    assert (segnet, blocks, attention) == (24_943_296, 10_220_160, 2_984_576)
    mtan = segnet + blocks + 3 * attention + _pred(64, 13) + _pred(64, 1) + _pred(64, 3)
    assert mtan == 44_229_073
    assert round(mtan / (segnet + _pred(64, 13)), 2) == 1.77


def test_segnet_mtan_nyuv2_parameters():
    """SegNet-MTAN for NYUv2 (13 / 1 / 3 outputs, 288×384): 44,229,073 parameters."""
    segnet, blocks, attention = _reference_counts()
    model = build_model("segnet", _nyuv2_tasks(), architecture="mtan")
    params, heads = _counts(model, (1, 288, 384, 3))
    assert count(params["shared"]) == segnet + blocks == 35_163_456
    assert count(params["shared"]["shared_blocks"]) == blocks
    assert heads == {
        "segmentation": attention + _pred(64, 13),
        "depth": attention + _pred(64, 1),
        "normal": attention + _pred(64, 3),
    }
    assert count(params) == 44_229_073


def test_segnet_mtan_cityscapes_parameters():
    """SegNet-MTAN for Cityscapes (7 classes and depth, 128×256): FAMO's `SegNetMtan`."""
    segnet, blocks, attention = _reference_counts()
    tasks = {
        "segmentation": Segmentation("segmentation", 7, height=128, width=256),
        "depth": Depth("depth", height=128, width=256),
    }
    params, heads = _counts(build_model("segnet", tasks, architecture="mtan"), (1, 128, 256, 3))
    assert heads == {"segmentation": attention + _pred(64, 7), "depth": attention + _pred(64, 1)}
    assert count(params) == segnet + blocks + sum(heads.values()) == 41_206_984


def test_segnet_hps_nyuv2_parameters():
    """The "split, standard" SegNet (Nash-MTL's `SegNet`): 25,055,185 parameters."""
    segnet, _, _ = _reference_counts()
    params, heads = _counts(build_model("segnet", _nyuv2_tasks()), (1, 288, 384, 3))
    assert count(params["shared"]) == segnet
    assert heads == {"segmentation": 37_773, "depth": 36_993, "normal": 37_123}
    assert count(params) == 25_055_185


def test_segnet_representations():
    model = build_model("segnet", _nyuv2_tasks(64, 96), architecture="mtan")
    image = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)
    rep, _ = jax.eval_shape(
        lambda v, x: model.apply_shared(
            v["params"]["shared"], v["batch_stats"]["shared"], x, train=False
        ),
        variables,
        image,
    )
    features = rep["features"]
    shapes = {key: [x.shape[1:] for x in value] for key, value in features.items()}
    assert shapes["encoder_in"] == shapes["encoder_out"]
    assert shapes["encoder_out"] == [
        (64, 96, 64),
        (32, 48, 128),
        (16, 24, 256),
        (8, 12, 512),
        (4, 6, 512),
    ]
    # Decoder features, deepest level first: unpooled inputs and level outputs.
    assert shapes["decoder_in"] == [
        (4, 6, 512),
        (8, 12, 512),
        (16, 24, 256),
        (32, 48, 128),
        (64, 96, 64),
    ]
    assert shapes["decoder_out"] == [
        (4, 6, 512),
        (8, 12, 256),
        (16, 24, 128),
        (32, 48, 64),
        (64, 96, 64),
    ]
    assert set(rep["tied"]) == {"shared_blocks"}


@pytest.mark.parametrize("architecture", ["hps", "mtan"])
def test_segnet_meets_the_architecture_contract(architecture):
    tasks = {
        "segmentation": Segmentation("segmentation", 5, height=32, width=32),
        "normal": SurfaceNormal("normal", height=32, width=32),
    }
    model = build_model("segnet", tasks, architecture=architecture, width_multiplier=1 / 16)
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    check_architecture(model, tasks, random_variables(model, image), image)


def test_segnet_needs_sizes_divisible_by_32():
    model = build_model("segnet", {"d": Depth("d", height=48, width=48)}, width_multiplier=1 / 16)
    with pytest.raises(ValueError, match="divisible by 32"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 48, 48, 3)))
