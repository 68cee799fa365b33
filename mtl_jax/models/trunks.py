"""Shared trunks (encoders). Each maps an NHWC image batch to the shared representation.

Every trunk takes `train` (batch statistics vs running averages for BatchNorm) so that
all trunks share one call signature.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def _max_pool(x):
    """2×2 max-pool with stride 2 (odd trailing rows/columns dropped, like torch).

    Written as a reshape and a max rather than `nn.max_pool`: XLA's CPU backward of the
    windowed reduction (select-and-scatter) is about 4× slower than the whole conv layer
    on LeNet. The forward is identical; gradients differ only for exactly tied maxima,
    where this form splits the gradient among them.
    """
    batch, height, width, channels = x.shape
    x = x[:, : height - height % 2, : width - width % 2]
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


class PatchConv(nn.Module):
    """VALID, stride-1 convolution computed as image patches times the kernel matrix.

    Same parameters as `nn.Conv(features, kernel_size, padding="VALID")` (`kernel`
    [kh, kw, C, F], `bias` [F]) and the same output. For few input channels (LeNet's
    first layer has one) XLA's CPU convolution is inefficient; measured on 2 cores at
    batch 128, this form takes 3.6 ms forward and 4.4 ms for the kernel gradient against
    5.5 ms and 6.4 ms. With many channels the native convolution is faster.
    """

    features: int
    kernel_size: tuple[int, int]

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        channels = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (kh, kw, channels, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
        patches = jnp.stack(
            [x[:, i : i + out_h, j : j + out_w, :] for i in range(kh) for j in range(kw)],
            axis=-2,
        )
        matrix = kernel.reshape(kh * kw, channels, self.features)
        return jnp.einsum("bhwpc,pcf->bhwf", patches, matrix) + bias


class LeNet(nn.Module):
    """The MultiMNIST LeNet encoder of Sener & Koltun (2018); workload W1.

    Conv(10, 5×5, VALID) → max-pool 2 → ReLU → Conv(20, 5×5, VALID) → max-pool 2 → ReLU
    → flatten (320) → Dense(50) → ReLU. Input [B, 28, 28, 1], representation [B, 50];
    21,330 parameters. The first convolution is a `PatchConv` (same parameters and
    output, faster on CPU for one input channel).
    """

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        del train
        x = nn.relu(_max_pool(PatchConv(10, (5, 5), name="Conv_0")(x)))
        x = nn.relu(_max_pool(nn.Conv(20, (5, 5), padding="VALID", name="Conv_1")(x)))
        x = x.reshape((x.shape[0], -1))
        return nn.relu(nn.Dense(50)(x))


class SeedCNN(nn.Module):
    """The seed project's trunk: two 3×3 convolutions (padding 1) with ReLU and 2×2 max-pool.

    Conv(16) → ReLU → pool → Conv(32) → ReLU → pool. A 32×32 RGB input gives a
    [B, 8, 8, 32] representation; the per-task `fc 128` layers live in the heads.
    """

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        del train
        x = _max_pool(nn.relu(nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)))(x)))
        return _max_pool(nn.relu(nn.Conv(32, (3, 3), padding=((1, 1), (1, 1)))(x)))


class _ConvBN(nn.Module):
    """Bias-free convolution followed by BatchNorm (eps 1e-5, torch momentum 0.1)."""

    features: int
    kernel: int
    stride: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        pad = self.kernel // 2
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
        )(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)


class BasicBlock(nn.Module):
    """torchvision-style residual block with a projection shortcut when the shape changes."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, *, train: bool):
        out = nn.relu(_ConvBN(self.features, 3, self.stride)(x, train=train))
        out = _ConvBN(self.features, 3, 1)(out, train=train)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = _ConvBN(self.features, 1, self.stride)(x, train=train)
        return nn.relu(out + x)


class SmallResNet(nn.Module):
    """The SmallResNet encoder of workloads W2/W3 (307,360 parameters).

    Stem Conv3×3(32)+BN+ReLU, then BasicBlocks 32 (stride 1), 64 (stride 2), 128 (stride 2).
    With `global_pool`, the [B, H/4, W/4, 128] map is averaged to [B, 128] (W3).
    """

    global_pool: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        x = nn.relu(_ConvBN(32, 3, 1)(x, train=train))
        x = BasicBlock(32, 1)(x, train=train)
        x = BasicBlock(64, 2)(x, train=train)
        x = BasicBlock(128, 2)(x, train=train)
        return jnp.mean(x, axis=(1, 2)) if self.global_pool else x
