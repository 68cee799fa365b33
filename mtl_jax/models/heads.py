"""Task heads. A head maps the shared representation to one task's prediction.

Heads take `dtype` (the computation dtype); `MultiTaskModel.apply_head` casts every
prediction to float32, so losses are always computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.conv import Conv
from mtl_jax.models.layers import (
    Dtype,
    batch_norm,
    conv,
    global_average_pool,
    resize_align_corners,
)


class MLPHead(nn.Module):
    """(Global average pool) → flatten → (Dense(h) → ReLU for each hidden size) → Dense(n).

    Attributes:
      hidden: hidden widths.
      num_outputs: output width.
      global_pool: average a [B, h, w, c] feature map over h and w first (heads of vector
        tasks on convolutional trunks such as the dilated ResNets); otherwise flatten.
    """

    hidden: Sequence[int]
    num_outputs: int
    global_pool: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        del train
        if self.global_pool and rep.ndim == 4:
            rep = global_average_pool(rep)
        x = rep.reshape((rep.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
        return nn.Dense(self.num_outputs, dtype=self.dtype)(x)


class DenseHead(nn.Module):
    """Per-pixel head producing an `[H, W, C]` map.

    On a feature map [B, h, w, c]: Conv3×3(hidden) → ReLU → Conv1×1(C) → bilinear resize
    to H×W (half-pixel centres, like `F.interpolate(..., align_corners=False)`), the head
    of workload W2. On a vector representation [B, d]: Dense(hidden) → ReLU →
    Dense(H·W·C) reshaped to the map (a decoder for trunks such as LeNet that end in a
    vector).
    """

    hidden: int
    output_shape: tuple[int, int, int]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        del train
        height, width, channels = self.output_shape
        if rep.ndim == 2:
            x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(rep))
            x = nn.Dense(height * width * channels, dtype=self.dtype)(x)
            return x.reshape((-1, height, width, channels))
        pad = ((1, 1), (1, 1))
        x = nn.relu(Conv(self.hidden, (3, 3), padding=pad, dtype=self.dtype)(rep))
        x = Conv(channels, (1, 1), dtype=self.dtype)(x)
        if x.shape[1:3] != (height, width):
            x = jax.image.resize(x, (x.shape[0], height, width, channels), "bilinear")
        return x


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLabv3 (Chen et al. 2017, Sec. 3.3).

    Five parallel branches of `features` channels — a 1×1 convolution, three 3×3
    convolutions with dilation `rates`, and global average pooling followed by a 1×1
    convolution (broadcast back to h×w) — each bias-free with BatchNorm and ReLU; then the
    concatenation is projected by a 1×1 convolution + BatchNorm + ReLU and dropout.
    The LibMTL / torchvision layout: 15,535,104 parameters on a 2048-channel input.
    """

    rates: Sequence[int] = (12, 24, 36)
    features: int = 256
    dropout_rate: float = 0.5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        def branch(y, kernel, dilation=1):
            y = conv(self.features, kernel, dilation=dilation, use_bias=False, dtype=self.dtype)(y)
            return nn.relu(batch_norm(train=train, dtype=self.dtype)(y))

        outs = [branch(x, 1)] + [branch(x, 3, rate) for rate in self.rates]
        pooled = branch(global_average_pool(x, keepdims=True), 1)
        # Bilinear upsampling of a 1×1 map (align_corners=False) is a broadcast.
        outs.append(jnp.broadcast_to(pooled, (*x.shape[:3], self.features)))
        x = branch(jnp.concatenate(outs, axis=-1), 1)
        return nn.Dropout(self.dropout_rate)(x, deterministic=not train)


class DeepLabHead(nn.Module):
    """DeepLabv3 head as used for dense tasks on dilated ResNets (LibMTL `DeepLabHead`).

    ASPP(rates 12/24/36, 256) → Conv3×3(256, no bias) → BatchNorm → ReLU → Conv1×1(C)
    → bilinear upsampling to H×W with `align_corners=True`. Parameters:
    16,125,440 + 257·C on a 2048-channel input (ResNet-50), 4,722,176 + 257·C on a
    512-channel one (ResNet-18). Training with dropout needs a `"dropout"` PRNG stream
    (`MultiTaskModel.apply_head(..., rng=...)`).

    Attributes:
      output_shape: (H, W, C) of the prediction.
      features: ASPP and hidden width (256 in the published models).
      dropout_rate: dropout after the ASPP projection (0.5 in LibMTL and torchvision).
    """

    output_shape: tuple[int, int, int]
    features: int = 256
    dropout_rate: float = 0.5
    rates: Sequence[int] = (12, 24, 36)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        if rep.ndim != 4:
            raise ValueError(f"DeepLabHead needs a [B, h, w, c] feature map, got {rep.shape}")
        height, width, channels = self.output_shape
        x = ASPP(self.rates, self.features, self.dropout_rate, self.dtype)(rep, train=train)
        x = conv(self.features, 3, use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(batch_norm(train=train, dtype=self.dtype)(x))
        x = conv(channels, 1, dtype=self.dtype)(x)
        return resize_align_corners(x, (height, width))
