"""A trunk, heads and model builder written outside mtl_jax (the guide "Your own model").

`build(tasks, dtype=...)` is what an experiment calls for
`--config.model.trunk=my_model:build`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models import MultiTaskModel
from mtl_jax.models.conv import Conv  # flax.linen.Conv, with a faster CPU kernel gradient
from mtl_jax.tasks import Task


class SmallConvTrunk(nn.Module):
    """Images [B, H, W, C] to a representation [B, features]: two convolutions with
    BatchNorm, then global average pooling."""

    features: int = 16
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        # `train` is passed by MultiTaskModel: BatchNorm uses batch statistics in
        # training and the running averages (`batch_stats`) at evaluation; momentum 0.9
        # (torch's 0.1) lets the averages catch up within a short run.
        x = x.astype(self.dtype)
        for width in (8, self.features):
            x = Conv(width, (3, 3), dtype=self.dtype)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
            x = nn.relu(x)
        return jnp.mean(x, axis=(1, 2))


class VectorHead(nn.Module):
    """A hidden layer, then the task's `output_shape` (e.g. logits or a regression)."""

    output_shape: tuple[int, ...]
    hidden: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        del train  # no dropout or BatchNorm here, but heads receive `train` too
        h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(rep))
        out = nn.Dense(math.prod(self.output_shape), dtype=self.dtype)(h)
        return out.reshape(rep.shape[0], *self.output_shape)


def build(tasks: Mapping[str, Task], *, dtype: Any = "float32") -> MultiTaskModel:
    """The multi-task model: `SmallConvTrunk` shared, one `VectorHead` per task."""
    dtype = jnp.dtype(dtype).type
    heads = {name: VectorHead(task.output_shape, dtype=dtype) for name, task in tasks.items()}
    return MultiTaskModel(trunk=SmallConvTrunk(dtype=dtype), heads=heads)
