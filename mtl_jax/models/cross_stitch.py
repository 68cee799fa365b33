"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016) on dilated ResNets.

One ResNet column per task; after stages 1, 2 and 3 a cross-stitch unit replaces each
column's features by a learned linear combination of all columns' features (Eq. 1):
`x̃_t = Σ_j α_tj x_j`, one scalar α per (task, column) pair and unit, as in the paper and
LibMTL's `Cross_stitch`. The last stage of each column and its decoder follow.

How it fits the `{"shared", "tasks"}` split ("shared" = used by every task): after the
first unit every task's loss depends on every column, so the stems and stages 1–3 of all
columns and the first two units are shared. Only the last unit's row α_t· (which forms
task t's input to its last stage), column t's last stage and task t's decoder feed task t
alone; they are the head, under `params["tasks"][t]`. The representation is the tuple of
all columns' stage-3 outputs in sorted task-name order. (LibMTL hands the whole encoder,
last stages included, to the weighting method as "shared"; the blocks that only one task
uses then add only that task's gradient to the Gramian's diagonal.)

Initialisation: α = 0.9 for a column's own task and 0.1 shared equally by the others
(rows sum to 1), the (α_S, α_D) = (0.9, 0.1) the paper found best (Sec. 5.2); LibMTL
starts from all ones. Misra et al. also train α with a 10²–10³× larger learning rate,
which is an optimiser setting, not part of the model.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.layers import Dtype
from mtl_jax.models.resnet import DEPTHS, ResNet, ResNetStage, stage_schedule


def stitch_matrix(num_tasks: int, self_weight: float = 0.9) -> jax.Array:
    """Initial [T, T] unit: `self_weight` on the diagonal, the rest split evenly per row."""
    if num_tasks == 1:
        return jnp.ones((1, 1), jnp.float32)
    other = (1.0 - self_weight) / (num_tasks - 1)
    eye = jnp.eye(num_tasks, dtype=jnp.float32)
    return eye * self_weight + (1.0 - eye) * other


class CrossStitchTrunk(nn.Module):
    """The shared part: T ResNet columns up to stage 3, with units after stages 1 and 2.

    Attributes:
      num_tasks: T, the number of columns (column t serves the t-th task in sorted order).
      depth, width, output_stride: of every ResNet column.
      self_weight: initial α of a column's own task.

    Returns:
      A tuple of T feature maps [B, h, w, c], the columns' stage-3 outputs.
    """

    num_tasks: int
    depth: int = 50
    width: int = 64
    output_stride: int = 8
    self_weight: float = 0.9
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        columns = [
            ResNet(
                self.depth,
                self.width,
                self.output_stride,
                num_stages=3,
                dtype=self.dtype,
                name=f"column_{t}",
            )
            for t in range(self.num_tasks)
        ]
        feats = [column.stem(x, train=train) for column in columns]
        for stage in range(3):
            feats = [
                column.stage(stage, f, train=train)[1]
                for column, f in zip(columns, feats, strict=True)
            ]
            if stage < 2:
                alpha = self.param(
                    f"cross_stitch_{stage}",
                    lambda _: stitch_matrix(self.num_tasks, self.self_weight),
                )
                stacked = jnp.stack(feats)
                mixed = jnp.einsum("tj,j...->t...", alpha.astype(stacked.dtype), stacked)
                feats = list(mixed)
        return tuple(feats)


class CrossStitchHead(nn.Module):
    """Task t's part: its row of the last unit, its column's stage 4, its decoder.

    Attributes:
      decoder: the task's decoder on its stage-4 output.
      task_index: t, the task's position in sorted task-name order.
      num_tasks, depth, width, output_stride, self_weight: as in `CrossStitchTrunk`.
    """

    decoder: nn.Module
    task_index: int
    num_tasks: int
    depth: int = 50
    width: int = 64
    output_stride: int = 8
    self_weight: float = 0.9
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        if len(rep) != self.num_tasks:
            raise ValueError(f"cross-stitch head expects {self.num_tasks} columns, got {len(rep)}")
        row = self.param(
            "cross_stitch_2",
            lambda _: stitch_matrix(self.num_tasks, self.self_weight)[self.task_index],
        )
        stacked = jnp.stack(rep)
        x = jnp.einsum("j,j...->...", row.astype(stacked.dtype), stacked)
        kind, sizes = DEPTHS[self.depth]
        stride, first_dilation, dilation = stage_schedule(self.output_stride)[3]
        _, x = ResNetStage(
            kind,
            self.width * 8,
            sizes[3],
            stride,
            first_dilation,
            dilation,
            dtype=self.dtype,
            name="layer4",
        )(x, train=train)
        return self.decoder(x, train=train)
