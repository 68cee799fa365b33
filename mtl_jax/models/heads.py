"""Task heads. A head maps the shared representation to one task's prediction."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLPHead(nn.Module):
    """Flatten → (Dense(h) → ReLU for each hidden size) → Dense(num_outputs)."""

    hidden: Sequence[int]
    num_outputs: int

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        del train
        x = rep.reshape((rep.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_outputs)(x)


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

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        del train
        height, width, channels = self.output_shape
        if rep.ndim == 2:
            x = nn.relu(nn.Dense(self.hidden)(rep))
            return nn.Dense(height * width * channels)(x).reshape((-1, height, width, channels))
        x = nn.relu(nn.Conv(self.hidden, (3, 3), padding=((1, 1), (1, 1)))(rep))
        x = nn.Conv(channels, (1, 1))(x)
        if x.shape[1:3] != (height, width):
            x = jax.image.resize(x, (x.shape[0], height, width, channels), "bilinear")
        return x.astype(jnp.float32)
