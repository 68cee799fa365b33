"""Shared trunks (encoders). Each maps an NHWC image batch to the shared representation.

Every trunk takes `train` (batch statistics vs running averages for BatchNorm) so that
all trunks share one call signature, and `dtype`, the computation dtype (parameters stay
float32). The larger architectures live in their own modules (`segnet`, `resnet`).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models.conv import Conv, patches
from mtl_jax.models.layers import (
    TORCH_DEFAULT,
    Dtype,
    batch_norm,
    global_average_pool,
    max_pool_2x2,
)


class PatchConv(nn.Module):
    """VALID, stride-1 convolution computed as image patches times the kernel matrix.

    Same parameters as `nn.Conv(features, kernel_size, padding="VALID")` (`kernel`
    [kh, kw, C, F], `bias` [F]) and the same output. For few input channels (LeNet's
    first layer has one) XLA's CPU convolution is inefficient and this form is faster,
    forward and in the kernel gradient (measured: `benchmarks/results/README.md`). With
    many channels the native convolution is faster.
    """

    features: int
    kernel_size: tuple[int, int]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        channels = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (kh, kw, channels, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
        windows = patches(x, (kh, kw), (out_h, out_w))
        return windows @ kernel.reshape(kh * kw * channels, self.features) + bias


class LeNet(nn.Module):
    """The MultiMNIST LeNet encoder of Sener & Koltun (2018); workload W1.

    Conv(10, 5×5, VALID) → max-pool 2 → ReLU → Conv(20, 5×5, VALID) → max-pool 2 → ReLU
    → flatten (320) → Dense(50) → ReLU. Input [B, 28, 28, 1], representation [B, 50];
    21,330 parameters. The first convolution is a `PatchConv` (same parameters and
    output, faster on CPU for one input channel).
    """

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        del train
        x = nn.relu(max_pool_2x2(PatchConv(10, (5, 5), dtype=self.dtype, name="Conv_0")(x)))
        x = Conv(20, (5, 5), padding="VALID", dtype=self.dtype, name="Conv_1")(x)
        x = nn.relu(max_pool_2x2(x))
        x = x.reshape((x.shape[0], -1))
        return nn.relu(nn.Dense(50, dtype=self.dtype)(x))


class SeedCNN(nn.Module):
    """The seed project's trunk: two 3×3 convolutions (padding 1) with ReLU and 2×2 max-pool.

    Conv(16) → ReLU → pool → Conv(32) → ReLU → pool. A 32×32 RGB input gives a
    [B, 8, 8, 32] representation; the per-task `fc 128` layers live in the heads.
    """

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        del train
        pad = ((1, 1), (1, 1))
        x = max_pool_2x2(nn.relu(Conv(16, (3, 3), padding=pad, dtype=self.dtype)(x)))
        return max_pool_2x2(nn.relu(Conv(32, (3, 3), padding=pad, dtype=self.dtype)(x)))


class _ConvBN(nn.Module):
    """Bias-free convolution followed by BatchNorm (eps 1e-5, torch momentum 0.1)."""

    features: int
    kernel: int
    stride: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        pad = self.kernel // 2
        x = Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            dtype=self.dtype,
        )(x)
        return batch_norm(train=train, dtype=self.dtype)(x)


class BasicBlock(nn.Module):
    """torchvision-style residual block with a projection shortcut when the shape changes."""

    features: int
    stride: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        out = nn.relu(_ConvBN(self.features, 3, self.stride, self.dtype)(x, train=train))
        out = _ConvBN(self.features, 3, 1, self.dtype)(out, train=train)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = _ConvBN(self.features, 1, self.stride, self.dtype)(x, train=train)
        return nn.relu(out + x)


class SmallResNet(nn.Module):
    """The SmallResNet encoder of workloads W2/W3 (307,360 parameters).

    Stem Conv3×3(32)+BN+ReLU, then BasicBlocks 32 (stride 1), 64 (stride 2), 128 (stride 2).
    With `global_pool`, the [B, H/4, W/4, 128] map is averaged to [B, 128] (W3).
    """

    global_pool: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        x = nn.relu(_ConvBN(32, 3, 1, self.dtype)(x, train=train))
        x = BasicBlock(32, 1, self.dtype)(x, train=train)
        x = BasicBlock(64, 2, self.dtype)(x, train=train)
        x = BasicBlock(128, 2, self.dtype)(x, train=train)
        return global_average_pool(x) if self.global_pool else x


class CelebACNN(nn.Module):
    """The 9-layer CNN of the FAMO CelebA experiments (Liu et al., NeurIPS 2023).

    Seven bias-free 3×3 convolutions (padding 1), each followed by BatchNorm and ReLU, with
    channels 64 | 128, 128 | 256, 256 | 512, 512, a 2×2 max-pool after each `|` group, a
    global average pool, then two bias-free Dense(512) + BatchNorm + ReLU layers. Input
    [B, 64, 64, 3], representation [B, 512]; 5,176,640 parameters. The 40 heads of that
    setup are one Dense(1) each (`MLPHead(hidden=())`, 513 parameters). Weights start from
    torch's default initialisation, as in the reference code (which does not re-initialise).

    Attributes:
      channels: the seven convolution widths (scaled only for tests).
      hidden: the width of the two dense layers.
    """

    channels: Sequence[int] = (64, 128, 128, 256, 256, 512, 512)
    hidden: int = 512
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        if len(self.channels) != 7:
            raise ValueError(f"CelebACNN needs 7 channel widths, got {tuple(self.channels)}")
        for index, features in enumerate(self.channels):
            x = Conv(
                features,
                (3, 3),
                padding=((1, 1), (1, 1)),
                use_bias=False,
                kernel_init=TORCH_DEFAULT,
                dtype=self.dtype,
            )(x)
            x = nn.relu(batch_norm(train=train, dtype=self.dtype)(x))
            if index in (0, 2, 4):  # pool after conv 1, conv 3 and conv 5
                x = max_pool_2x2(x)
        x = global_average_pool(x)
        for _ in range(2):
            x = nn.Dense(self.hidden, use_bias=False, kernel_init=TORCH_DEFAULT, dtype=self.dtype)(
                x
            )
            x = nn.relu(batch_norm(train=train, dtype=self.dtype)(x))
        return x
