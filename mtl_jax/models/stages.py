"""Trunks cut into stages: the pieces that layered architectures (PLE, Learning-to-Branch)
interleave with their gates and branching points.

A trunk's stages, run in order, compute the trunk: `trunk(x) = s_{n-1}(… s_1(s_0(x)))`.
The cuts follow LibMTL, which splits a torchvision ResNet into the stem (conv1, bn1,
ReLU, max-pool) and `layer1` … `layer4` (`_transform_resnet_PLE`, `_transform_resnet_ltb`);
LeNet is cut after each convolution block:

| trunk | stages (parameters) |
| --- | --- |
| `lenet` | conv(10) → pool → ReLU (260); conv(20) → pool → ReLU (5,020); Dense(50) (16,050) |
| `resnet18`, `resnet50` | the stem, stages 1, 2, 3, 4 (dilated to output stride 8), as `ResNet` |

`group_stages` joins consecutive stages into blocks (`TrunkStages`), the unit at which an
architecture places a gate or a branching point. A `TrunkStages` builds its layers itself
(it holds no submodule as an attribute), so every `clone` of it has weights of its own.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mtl_jax.models.conv import Conv
from mtl_jax.models.layers import Dtype, max_pool_2x2
from mtl_jax.models.resnet import DEPTHS, TRUNK_DEPTHS, ResNet, ResNetStage, stage_schedule
from mtl_jax.models.trunks import PatchConv

# Trunk name -> number of stages, for the trunks that can be cut.
NUM_STAGES = {"lenet": 3, "resnet18": 5, "resnet50": 5}
STAGED_TRUNKS = tuple(NUM_STAGES)


class TrunkStages(nn.Module):
    """Stages `start` … `stop − 1` of trunk `trunk` (submodules `stage_{i}`).

    Attributes:
      trunk: a name in `STAGED_TRUNKS`.
      start, stop: the stages to run, `start <= i < stop`.
      width: ResNet stem / first-stage width (64 in the published models).
      dtype: computation dtype.
    """

    trunk: str
    start: int
    stop: int
    width: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        if self.trunk not in NUM_STAGES:
            raise ValueError(
                f"trunk {self.trunk!r} has no stages; staged trunks: {list(STAGED_TRUNKS)}"
            )
        for index in range(self.start, self.stop):
            x = self._stage(index, x, train=train)
        return x

    def _stage(self, index: int, x, *, train: bool):
        name, dtype = f"stage_{index}", self.dtype
        if self.trunk == "lenet":
            if index == 2:
                x = x.reshape((x.shape[0], -1))
                return nn.relu(nn.Dense(50, dtype=dtype, name=name)(x))
            if index == 0:
                x = PatchConv(10, (5, 5), dtype=dtype, name=name)(x)
            else:
                x = Conv(20, (5, 5), padding="VALID", dtype=dtype, name=name)(x)
            return nn.relu(max_pool_2x2(x))
        depth = TRUNK_DEPTHS[self.trunk]
        if index == 0:
            return ResNet(depth, self.width, num_stages=0, dtype=dtype, name=name)(x, train=train)
        kind, sizes = DEPTHS[depth]
        schedule = stage_schedule(8)[index - 1]
        stage = ResNetStage(
            kind, self.width * 2 ** (index - 1), sizes[index - 1], *schedule, dtype=dtype, name=name
        )
        return stage(x, train=train)[1]


def group_stages(
    trunk: str, levels: int, *, width: int = 64, dtype: Dtype = jnp.float32
) -> tuple[TrunkStages, ...]:
    """Trunk `trunk`'s stages as `levels` blocks of consecutive stages, as even as possible
    (earlier blocks get the extra stage).

    Raises:
      ValueError: for a trunk without stages, or unless 1 <= levels <= its stage count.
    """
    if trunk not in NUM_STAGES:
        raise ValueError(f"trunk {trunk!r} has no stages; staged trunks: {list(STAGED_TRUNKS)}")
    count = NUM_STAGES[trunk]
    if not 1 <= levels <= count:
        raise ValueError(f"levels must be in [1, {count}], got {levels}")
    bounds = [int(part[0]) for part in np.array_split(np.arange(count), levels)] + [count]
    return tuple(
        TrunkStages(trunk, start, stop, width=width, dtype=dtype)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
    )
