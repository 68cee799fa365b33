"""Building blocks shared by the architectures: pooling, resizing, initialisers, BatchNorm.

Everything here is NHWC and dtype-aware: modules take `dtype` (the computation dtype, e.g.
`jnp.bfloat16`) and keep their parameters float32 (Flax's default `param_dtype`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models.conv import Conv

Dtype = Any

# torch's initialisers, so that ports of reference models start from the same distributions.
# `xavier_normal_` (the SegNet/MTAN reference code) is an *untruncated* normal.
XAVIER_NORMAL = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")
# `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, torchvision's ResNet convolutions.
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch's default for Conv2d/Linear weights: kaiming_uniform(a=√5) = U(±1/√fan_in).
TORCH_DEFAULT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def batch_norm(*, train: bool, dtype: Dtype, name: str | None = None) -> nn.BatchNorm:
    """torch-equivalent BatchNorm (eps 1e-5, torch momentum 0.1 = Flax momentum 0.9).

    Statistics are reduced in float32 whatever `dtype` is (Flax's
    `force_float32_reductions`), and the running averages are float32.
    """
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name
    )


def conv(
    features: int,
    kernel: int,
    *,
    dtype: Dtype,
    stride: int = 1,
    dilation: int = 1,
    use_bias: bool = True,
    kernel_init=TORCH_DEFAULT,
    name: str | None = None,
) -> nn.Conv:
    """A square convolution with torch's symmetric padding `dilation · (kernel // 2)`."""
    pad = dilation * (kernel // 2)
    return Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
        use_bias=use_bias,
        kernel_init=kernel_init,
        dtype=dtype,
        name=name,
    )


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max-pool with stride 2 on [B, H, W, C] (odd trailing rows/columns dropped, like torch).

    Written as a reshape and a max rather than `nn.max_pool`: XLA's CPU backward of the
    windowed reduction (select-and-scatter) costs more than the whole conv layer on LeNet
    (measured: `benchmarks/results/README.md`). The forward is identical; gradients
    differ only for exactly tied maxima, where this form splits the gradient among them.
    """
    batch, height, width, channels = x.shape
    x = x[:, : height - height % 2, : width - width % 2]
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def global_average_pool(x: jax.Array, *, keepdims: bool = False) -> jax.Array:
    """Mean over H and W of [B, H, W, C], accumulated in float32 and returned in x's dtype."""
    return jnp.mean(x, axis=(1, 2), keepdims=keepdims, dtype=jnp.float32).astype(x.dtype)


def _windows(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H/2, W/2, C, 4], window positions in row-major order."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
    return x.transpose(0, 1, 3, 5, 2, 4).reshape(batch, height // 2, width // 2, channels, 4)


def max_pool_with_indices(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """2×2/stride-2 max-pool that also returns where each maximum was (SegNet's pooling).

    Equivalent to `nn.MaxPool2d(2, 2, return_indices=True)`: ties go to the first position
    in row-major window order, and the gradient flows to that position only.

    Args:
      x: [B, H, W, C] with H and W even.

    Returns:
      `(pooled [B, H/2, W/2, C], indices [B, H/2, W/2, C])` with indices in {0, 1, 2, 3}.
    """
    if x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"max_pool_with_indices needs even height and width, got {x.shape}")
    windows = _windows(x)
    indices = jnp.argmax(windows, axis=-1)
    # A one-hot product rather than a gather: the same values, and its gradient is a
    # product too, where a gather's is a scatter (slower to compile and to run on CPU).
    pooled = jnp.sum(windows * jax.nn.one_hot(indices, 4, dtype=x.dtype), axis=-1)
    return pooled, indices


def max_unpool(x: jax.Array, indices: jax.Array) -> jax.Array:
    """Inverse of `max_pool_with_indices` (`nn.MaxUnpool2d(2, 2)`): zeros except at the maxima.

    Args:
      x: [B, h, w, C] values to place.
      indices: [B, h, w, C] window positions from `max_pool_with_indices`.

    Returns:
      [B, 2h, 2w, C].
    """
    batch, height, width, channels = x.shape
    placed = x[..., None] * jax.nn.one_hot(indices, 4, dtype=x.dtype)
    placed = placed.reshape(batch, height, width, channels, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return placed.reshape(batch, 2 * height, 2 * width, channels)


def _align_corners_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] linear-interpolation weights with corner pixels aligned."""
    if size_out == 1:
        positions = np.zeros(1)
    else:
        positions = np.arange(size_out) * (size_in - 1) / (size_out - 1)
    low = np.clip(np.floor(positions).astype(int), 0, max(size_in - 2, 0))
    frac = positions - low
    matrix = np.zeros((size_out, size_in))
    matrix[np.arange(size_out), low] += 1.0 - frac
    if size_in > 1:
        matrix[np.arange(size_out), low + 1] += frac
    return matrix.astype(np.float32)


def resize_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of [B, h, w, C] to [B, H, W, C] with `align_corners=True`.

    `F.interpolate(..., mode="bilinear", align_corners=True)`, used by the MTAN reference
    code (decoder attention) and LibMTL's DeepLab head. `jax.image.resize` only has
    half-pixel centres (`align_corners=False`), so this is two small interpolation
    matrices applied separably.
    """
    rows = jnp.asarray(_align_corners_matrix(x.shape[1], size[0]), x.dtype)
    cols = jnp.asarray(_align_corners_matrix(x.shape[2], size[1]), x.dtype)
    return jnp.einsum("Hh,bhwc,Ww->bHWc", rows, x, cols)
