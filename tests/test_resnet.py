"""Dilated ResNet-18/50 with DeepLab heads, and MTAN on ResNet."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.models import ResNet, build_model
from mtl_jax.tasks import BinaryLabels, Depth, Segmentation, SurfaceNormal
from tests.test_models import check_architecture, count, random_variables

# torchvision's resnet18 / resnet50 have 11,689,512 / 25,557,032 parameters, of which the
# 1000-way classifier takes 512·1000 + 1000 / 2048·1000 + 1000.
RESNET18 = 11_689_512 - 513_000
RESNET50 = 25_557_032 - 2_049_000


def _bn(c):
    return 2 * c


def _aspp_head(cin, classes):
    """LibMTL's `DeepLabHead(cin, classes)`, from its layer list (bias-free except the last)."""
    aspp = 2 * (cin * 256 + _bn(256)) + 3 * (9 * cin * 256 + _bn(256))
    aspp += 5 * 256 * 256 + _bn(256)
    return aspp + 9 * 256 * 256 + _bn(256) + 256 * classes + classes


def _att(cin, mid, cout):  # MTAN attention layer: two biased 1×1 convs with BatchNorm
    return cin * mid + mid + _bn(mid) + mid * cout + cout + _bn(cout)


def _bottleneck(cin, planes):  # with a 1×1 projection shortcut
    out = 4 * planes
    body = cin * planes + _bn(planes) + 9 * planes * planes + _bn(planes) + planes * out + _bn(out)
    return body + cin * out + _bn(out)


def _basic(cin, planes):  # with a 1×1 projection shortcut
    body = 9 * cin * planes + _bn(planes) + 9 * planes * planes + _bn(planes)
    return body + cin * planes + _bn(planes)


def _mtan_reference(depth):
    """(shared attention blocks, attention modules per task) of MTAN's ResNet version.

    From the authors' `MTANDeepLabv3` (ResNet-50) and LibMTL's `_transform_resnet_MTAN`
    (ResNet-18): attention i maps (2×)c_i → c_i/e → c_i; shared block i is a residual
    block from c_i to c_{i+1} with a projection shortcut, for i < 3.
    """
    if depth == 50:
        ch = (256, 512, 1024, 2048)
        blocks = sum(_bottleneck(ch[i], ch[i + 1] // 4) for i in range(3))
        attention = _att(ch[0], ch[0] // 4, ch[0])
        attention += sum(_att(2 * ch[i], ch[i] // 4, ch[i]) for i in range(1, 4))
    else:
        ch = (64, 128, 256, 512)
        blocks = sum(_basic(ch[i], ch[i + 1]) for i in range(3))
        attention = _att(ch[0], ch[0], ch[0])
        attention += sum(_att(2 * ch[i], ch[i], ch[i]) for i in range(1, 4))
    return blocks, attention


def _nyuv2_tasks(height=288, width=384):
    return {
        "segmentation": Segmentation("segmentation", 13, height=height, width=width),
        "depth": Depth("depth", height=height, width=width),
        "normal": SurfaceNormal("normal", height=height, width=width),
    }


def _params(model, shape=(1, 288, 384, 3)):
    image = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), image)["params"]


@pytest.mark.parametrize(("depth", "expected"), [(18, RESNET18), (50, RESNET50)])
def test_resnet_parameters_match_torchvision(depth, expected):
    image = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(ResNet(depth).init, jax.random.PRNGKey(0), image)
    assert count(variables["params"]) == expected


@pytest.mark.parametrize(
    ("depth", "output_stride", "shape"),
    [
        (50, 8, (36, 48, 2048)),
        (50, 16, (18, 24, 2048)),
        (50, 32, (9, 12, 2048)),
        (18, 8, (36, 48, 512)),
    ],
)
def test_output_stride(depth, output_stride, shape):
    image = jax.ShapeDtypeStruct((2, 288, 384, 3), jnp.float32)
    model = ResNet(depth, output_stride=output_stride)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, image)
    assert out.shape == (2, *shape)


def _conv_settings(jaxpr) -> list[tuple]:
    """(kernel height, stride, dilation) of every convolution, in program order."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            params = eqn.params
            found.append((kernel[0], params["window_strides"][0], params["rhs_dilation"][0]))
        for value in eqn.params.values():  # nested programs (jit, custom rules), in place
            sub = getattr(value, "jaxpr", value)
            if hasattr(sub, "eqns"):
                found.extend(_conv_settings(sub))
    return found


@pytest.mark.parametrize(
    ("depth", "dilated_3x3"),
    # 3×3 convolutions of stages 3 and 4 (stage 1 and 2 ones are undilated): the one that
    # had the stride keeps half the stage's dilation (DeepLab / `ResnetDilated`).
    [(18, [1, 2, 2, 2, 2, 4, 4, 4]), (50, [1, 2, 2, 2, 2, 2, 2, 4, 4])],
)
def test_dilation_follows_resnet_dilated(depth, dilated_3x3):
    model = ResNet(depth, width=8)
    image = jnp.zeros((1, 64, 64, 3))
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)
    jaxpr = jax.make_jaxpr(lambda v: model.apply(v, image, train=False))(variables)
    settings = _conv_settings(jaxpr.jaxpr)
    strided = [s for s in settings if s[1] == 2]
    assert strided == [(7, 2, 1), (3, 2, 1), (1, 2, 1)]  # stem, stage 2's conv and shortcut
    stage_1_2 = {18: 4 + 5, 50: 3 * 3 + 1 + 4 * 3 + 1}[depth]  # convs incl. shortcuts
    late = [s[2] for s in settings[1 + stage_1_2 :] if s[0] == 3]
    assert late == dilated_3x3


def test_deeplab_heads_match_libmtl():
    """HPS ResNet-50 + DeepLab heads for NYUv2 (LibMTL's NYUv2 example)."""
    params = _params(build_model("resnet50", _nyuv2_tasks()))
    assert count(params["shared"]) == RESNET50
    heads = {name: count(p) for name, p in params["tasks"].items()}
    assert heads == {
        "segmentation": _aspp_head(2048, 13),
        "depth": _aspp_head(2048, 1),
        "normal": _aspp_head(2048, 3),
    }
    assert _aspp_head(2048, 13) == 16_125_440 + 257 * 13
    params = _params(build_model("resnet18", {"depth": Depth("depth", height=288, width=384)}))
    assert count(params["shared"]) == RESNET18
    assert count(params["tasks"]["depth"]) == _aspp_head(512, 1) == 4_722_176 + 257


@pytest.mark.parametrize("depth", [18, 50])
def test_mtan_resnet_parameters(depth):
    blocks, attention = _mtan_reference(depth)
    trunk = f"resnet{depth}"
    params = _params(build_model(trunk, _nyuv2_tasks(), architecture="mtan"))
    width = 2048 if depth == 50 else 512
    assert count(params["shared"]["shared_blocks"]) == blocks
    assert count(params["shared"]) == (RESNET50 if depth == 50 else RESNET18) + blocks
    heads = {name: count(p) for name, p in params["tasks"].items()}
    assert heads == {
        "segmentation": attention + _aspp_head(width, 13),
        "depth": attention + _aspp_head(width, 1),
        "normal": attention + _aspp_head(width, 3),
    }


def test_vector_tasks_get_pooled_heads():
    tasks = {"attr": BinaryLabels("attr", 3)}
    params = _params(build_model("resnet18", tasks, head_hidden=()), (1, 64, 64, 3))
    assert count(params["tasks"]["attr"]) == 512 * 3 + 3


@pytest.mark.parametrize(
    ("trunk", "architecture"),
    [
        ("resnet18", "hps"),
        ("resnet18", "mtan"),
        # Bottleneck blocks in the trunk and in MTAN's shared blocks.
        pytest.param("resnet50", "mtan", marks=pytest.mark.slow),
    ],
)
def test_resnet_meets_the_architecture_contract(trunk, architecture):
    tasks = {
        "depth": Depth("depth", height=32, width=32),
        "attr": BinaryLabels("attr", 2),
    }
    model = build_model(
        trunk, tasks, architecture=architecture, width_multiplier=1 / 16, head_hidden=(8,)
    )
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    check_architecture(model, tasks, random_variables(model, image), image)
