"""2-D convolution whose kernel gradient on CPU is a chunked patches-times-cotangent product.

XLA's CPU backend computes the kernel gradient of a convolution (the contraction of the
input with the output cotangent over batch and space) as a convolution whose "kernel" is
the whole cotangent image, and that runs far below the machine's matmul speed: on this
project's layers the chunked product below is several times faster (the measurements are
in `benchmarks/results/README.md`, "Measurements behind implementation choices").

Here the kernel gradient is `Σ_chunks patches(x_chunk)ᵀ · dy_chunk`. The patches are the
`kh·kw` shifted, strided slices of the padded input, concatenated along channels
(`[rows, kh·kw·C]`). The batch is cut into chunks of about `PATCH_CHUNK_BYTES` of patches,
so each product stays in cache, and `lax.scan` accumulates them in float32. The forward
pass and the input gradient stay XLA's own, which are fast.

`conv_general_dilated` has `lax.conv_general_dilated`'s signature, so it plugs into
`flax.linen.Conv(conv_general_dilated=...)`. The parameters, the forward values and the
input gradient are unchanged. The kernel gradient differs from XLA's only by float
summation order. Other backends (GPU, TPU) keep XLA's kernel gradient: the choice is
`lax.platform_dependent`, made when the program is lowered for its device.

Only 2-D NHWC/HWIO convolutions with no input dilation, no feature or batch groups and
no `preferred_element_type` take this path. Anything else is passed to
`lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Target size of one chunk's patch matrix. On the 2-core CPU the fastest chunkings of the
# W3 layers had 2.4–9.4 MiB of patches (a chunk's patches stay in the last-level cache);
# 16 MiB gives those layers 2, 4 and 8 images per chunk, next to the measured optima. The
# table's "chunked patches" column is the range over the chunkings near the optimum.
PATCH_CHUNK_BYTES = 16 * 2**20
_NHWC = ("NHWC", "HWIO", "NHWC")

Pads = tuple[tuple[int, int], tuple[int, int]]


def conv_general_dilated(
    lhs,
    rhs,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
):
    """`lax.conv_general_dilated`, with the CPU kernel gradient of the module docstring."""
    native = functools.partial(
        lax.conv_general_dilated,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    if (
        lhs.ndim != 4
        or _dimension_numbers(lhs, rhs, dimension_numbers)
        != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        or any(d != 1 for d in (lhs_dilation or (1, 1)))
        or feature_group_count != 1
        or batch_group_count != 1
        or preferred_element_type is not None
    ):
        return native(lhs, rhs)
    strides = tuple(int(s) for s in window_strides)
    dilation = tuple(int(d) for d in (rhs_dilation or (1, 1)))
    if isinstance(padding, str):
        dilated = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation, strict=True)]
        padding = lax.padtype_to_pads(lhs.shape[1:3], dilated, strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv2d(lhs, rhs, strides, pads, dilation, precision)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
Conv.__doc__ = "`flax.linen.Conv` computing with `conv_general_dilated` (same parameters)."


def _dimension_numbers(lhs, rhs, dimension_numbers) -> lax.ConvDimensionNumbers:
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)


def _native_conv2d(x, kernel, strides, pads, dilation, precision):
    return lax.conv_general_dilated(
        x,
        kernel,
        strides,
        pads,
        rhs_dilation=dilation,
        dimension_numbers=_NHWC,
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv2d(x, kernel, strides, pads, dilation, precision):
    return _native_conv2d(x, kernel, strides, pads, dilation, precision)


def _conv2d_fwd(x, kernel, strides, pads, dilation, precision):
    return _native_conv2d(x, kernel, strides, pads, dilation, precision), (x, kernel)


def _conv2d_bwd(strides, pads, dilation, precision, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(
        lambda x: _native_conv2d(x, kernel, strides, pads, dilation, precision), x
    )
    (dx,) = input_vjp(dy)

    def xla_kernel_grad(x, dy):
        _, kernel_vjp = jax.vjp(
            lambda k: _native_conv2d(x, k, strides, pads, dilation, precision), kernel
        )
        return kernel_vjp(dy)[0]

    def patches_kernel_grad(x, dy):
        grad = kernel_grad(x, dy, kernel.shape, strides, pads, dilation, precision)
        return grad.astype(kernel.dtype)

    dkernel = lax.platform_dependent(x, dy, cpu=patches_kernel_grad, default=xla_kernel_grad)
    return dx, dkernel


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def patches(x, kernel_size, out_size, strides=(1, 1), dilation=(1, 1)):
    """Image patches [N, H', W', kh·kw·C] of an (already padded) NHWC input `x`.

    Patch element (i, j, c) sits at index (i·kw + j)·C + c, the order of an HWIO kernel
    reshaped to [kh·kw·C, F], so `patches @ kernel.reshape(-1, F)` is the convolution.
    Built from kh·kw shifted, strided slices (no gather).

    Args:
      x: input [N, H, W, C], padding already applied.
      kernel_size: (kh, kw).
      out_size: (H', W'), the convolution's output size.
      strides, dilation: the convolution's window strides and kernel dilation.
    """
    kh, kw = kernel_size
    out_h, out_w = out_size
    return jnp.concatenate(
        [
            lax.slice(
                x,
                (0, i * dilation[0], j * dilation[1], 0),
                (
                    x.shape[0],
                    i * dilation[0] + strides[0] * (out_h - 1) + 1,
                    j * dilation[1] + strides[1] * (out_w - 1) + 1,
                    x.shape[3],
                ),
                (1, strides[0], strides[1], 1),
            )
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )


def kernel_grad(x, dy, kernel_shape, strides, pads: Pads, dilation, precision=None):
    """∂⟨dy, conv(x, k)⟩/∂k as chunked `patchesᵀ · dy`; the module docstring has the math.

    Args:
      x: input [N, H, W, C].
      dy: output cotangent [N, H', W', F].
      kernel_shape: (kh, kw, C, F).
      strides, pads, dilation: the convolution's, explicit.

    Returns:
      [kh, kw, C, F], float32.
    """
    kh, kw, channels, features = kernel_shape
    n, out_h, out_w, _ = dy.shape
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    per_image = out_h * out_w * kh * kw * channels * x.dtype.itemsize
    chunk = _largest_divisor_at_most(n, max(1, PATCH_CHUNK_BYTES // per_image))

    def accumulate(total, chunk_xy):
        x, dy = chunk_xy
        rows = x.shape[0] * out_h * out_w
        product = lax.dot_general(
            patches(x, (kh, kw), (out_h, out_w), strides, dilation).reshape(
                rows, kh * kw * channels
            ),
            dy.reshape(rows, features),
            (((0,), (0,)), ((), ())),
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        return total + product, None

    split = lambda a: a.reshape(n // chunk, chunk, *a.shape[1:])  # noqa: E731
    total, _ = lax.scan(
        accumulate,
        jnp.zeros((kh * kw * channels, features), jnp.float32),
        (split(x), split(dy)),
    )
    return total.reshape(kernel_shape)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    divisors = np.arange(1, min(n, limit) + 1)
    return int(divisors[n % divisors == 0].max())
