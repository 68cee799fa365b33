"""The convolution with the chunked CPU kernel gradient equals XLA's, value and gradients."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from mtl_jax.models import conv as conv_module
from mtl_jax.models.conv import Conv, conv_general_dilated, kernel_grad

NHWC = ("NHWC", "HWIO", "NHWC")


def _loss_grads(conv_fn, x, kernel, **conv_kwargs):
    def loss(x, kernel):
        y = conv_fn(x, kernel, dimension_numbers=NHWC, **conv_kwargs)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, kernel)


CASES = [
    # kernel (kh, kw), window_strides, padding, rhs_dilation, channels in -> out
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), (4, 6)),
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), (3, 5)),
    ((1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), (4, 8)),
    ((5, 3), (1, 2), ((2, 1), (0, 3)), (1, 1), (2, 3)),
    ((3, 3), (1, 1), "SAME", (2, 2), (3, 4)),
    ((3, 3), (2, 1), "VALID", (1, 2), (3, 4)),
    ((5, 5), (1, 1), "VALID", (1, 1), (1, 10)),
]


@pytest.mark.parametrize("kernel_hw, strides, padding, dilation, channels", CASES)
@pytest.mark.parametrize("chunk_bytes", [1, 2**30])  # one image per chunk / whole batch
def test_value_and_gradients_equal_xla(
    monkeypatch, kernel_hw, strides, padding, dilation, channels, chunk_bytes
):
    monkeypatch.setattr(conv_module, "PATCH_CHUNK_BYTES", chunk_bytes)
    cin, cout = channels
    x = jax.random.normal(jax.random.key(0), (6, 11, 10, cin))
    kernel = jax.random.normal(jax.random.key(1), (*kernel_hw, cin, cout))
    kwargs = dict(window_strides=strides, padding=padding, rhs_dilation=dilation)
    want_loss, (want_dx, want_dk) = _loss_grads(lax.conv_general_dilated, x, kernel, **kwargs)
    loss, (dx, dk) = _loss_grads(conv_general_dilated, x, kernel, **kwargs)
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_allclose(dk, want_dk, rtol=2e-5, atol=2e-5 * float(jnp.abs(want_dk).max()))


def test_kernel_grad_matches_float64_reference():
    """The chunked product itself, against an explicit float64 sum over positions."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 7, 6, 3)).astype(np.float32)
    dy = rng.normal(size=(4, 3, 5, 2)).astype(np.float32)
    strides, pads, dilation = (2, 1), ((1, 0), (1, 1)), (1, 2)
    got = kernel_grad(jnp.asarray(x), jnp.asarray(dy), (3, 2, 3, 2), strides, pads, dilation)
    padded = np.pad(x.astype(np.float64), ((0, 0), *pads, (0, 0)))
    want = np.zeros((3, 2, 3, 2))
    for i in range(3):
        for j in range(2):
            for h in range(3):
                for w in range(5):
                    patch = padded[:, h * 2 + i, w + j * 2, :]  # [N, C]
                    want[i, j] += patch.T @ dy[:, h, w, :].astype(np.float64)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_vmapped_cotangents_equal_xla():
    """Per-task VJPs (the parameter-mode Jacobian) batch the cotangent, not the input."""
    x = jax.random.normal(jax.random.key(0), (4, 9, 9, 3))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
    cotangents = jax.random.normal(jax.random.key(2), (7, 4, 5, 5, 5))

    def rows(conv_fn):
        def conv(kernel):
            return conv_fn(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=NHWC)

        _, vjp = jax.vjp(conv, kernel)
        return jax.jit(jax.vmap(lambda c: vjp(c)[0]))(cotangents)

    np.testing.assert_allclose(
        rows(conv_general_dilated), rows(lax.conv_general_dilated), rtol=1e-5, atol=1e-5
    )


def test_bfloat16_keeps_dtypes():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4), jnp.bfloat16)
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 4), jnp.bfloat16)
    kwargs = dict(window_strides=(1, 1), padding="SAME")
    (_, (dx, dk)), (_, (want_dx, want_dk)) = (
        _loss_grads(fn, x, kernel, **kwargs)
        for fn in (conv_general_dilated, lax.conv_general_dilated)
    )
    assert dx.dtype == dk.dtype == jnp.bfloat16
    np.testing.assert_array_equal(dx, want_dx)
    scale = float(jnp.abs(want_dk.astype(jnp.float32)).max())
    np.testing.assert_allclose(
        dk.astype(np.float32), want_dk.astype(np.float32), rtol=2e-2, atol=2e-2 * scale
    )


def _compiled_convolutions(conv_fn, x, kernel, **kwargs):
    def loss(x, kernel):
        return jnp.sum(conv_fn(x, kernel, **kwargs) ** 2)

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel).compile().as_text()
    return len(re.findall(r"\bconvolution\(", hlo))


def test_cpu_takes_the_patch_path_and_other_layouts_fall_back():
    """On CPU the kernel gradient is no convolution; layouts it does not cover stay XLA's."""
    x = jnp.ones((2, 6, 6, 4))
    kernel = jnp.ones((3, 3, 4, 4))
    kwargs = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=NHWC)
    assert jax.default_backend() == "cpu"
    native = _compiled_convolutions(lax.conv_general_dilated, x, kernel, **kwargs)
    assert _compiled_convolutions(conv_general_dilated, x, kernel, **kwargs) == native - 1

    grouped = dict(kwargs, feature_group_count=2)
    half = jnp.ones((3, 3, 2, 4))
    assert _compiled_convolutions(
        conv_general_dilated, x, half, **grouped
    ) == _compiled_convolutions(lax.conv_general_dilated, x, half, **grouped)
    nchw = dict(kwargs, dimension_numbers=("NCHW", "OIHW", "NCHW"))
    x_nchw, oihw = jnp.ones((2, 4, 6, 6)), jnp.ones((4, 4, 3, 3))
    assert _compiled_convolutions(
        conv_general_dilated, x_nchw, oihw, **nchw
    ) == _compiled_convolutions(lax.conv_general_dilated, x_nchw, oihw, **nchw)
    conv1d = dict(window_strides=(1,), padding="SAME", dimension_numbers=("NWC", "WIO", "NWC"))
    x_nwc, wio = jnp.ones((2, 6, 4)), jnp.ones((3, 4, 4))
    assert _compiled_convolutions(
        conv_general_dilated, x_nwc, wio, **conv1d
    ) == _compiled_convolutions(lax.conv_general_dilated, x_nwc, wio, **conv1d)


def test_flax_conv_has_nn_conv_parameters_and_outputs():
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 5))
    ours = Conv(7, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    reference = nn.Conv(7, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    params = ours.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, reference.init(jax.random.key(1), x)
    )
    np.testing.assert_array_equal(ours.apply(params, x), reference.apply(params, x))
