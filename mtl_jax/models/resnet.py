"""Dilated ResNet-18/50 (DeepLab, output stride 8) and MTAN on ResNet.

ResNet: He et al., CVPR 2016, torchvision layout (v1.5: the stride of a bottleneck is on
its 3×3 convolution), without the average pool and classifier. Dilated as in DeepLab and
LibMTL's / MTAN's `ResnetDilated` (Yu et al., CVPR 2017): for output stride 8 the strides
of stages 3 and 4 become 1 and their 3×3 convolutions are dilated by 2 and 4, except the
one that had the stride, dilated by half that (1 and 2). Dilation adds no parameters:
ResNet-18 has 11,176,512 and ResNet-50 23,508,032 (torchvision's 11,689,512 and
25,557,032 less the 1000-way classifier).

MTAN on ResNet (Liu et al., CVPR 2019; the authors' `MTANDeepLabv3` and LibMTL's `MTAN`):
per task, one attention module per stage masks the output of the stage's last block,
computed from the output of the blocks before it (concatenated with the previous
stage's attended features); between stages the attended features pass through a residual
block shared by all tasks (`tied`). The trunk is the plain ResNet returning every stage's
(penultimate, last) block outputs; `ResNetMTANHead` holds a task's four attention modules
and its decoder. LibMTL's version builds the per-task attention list as `[layer] * T`,
which makes all tasks share one attention module per stage; this follows the paper and
the authors' code (one module per task).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models.layers import (
    KAIMING_FAN_OUT,
    TORCH_DEFAULT,
    Dtype,
    batch_norm,
    conv,
    global_average_pool,
    max_pool_2x2,
)
from mtl_jax.models.segnet import AttentionLayer

# Trunk name (as written in configs) -> ResNet depth.
TRUNK_DEPTHS = {"resnet18": 18, "resnet50": 50}
# depth -> (block kind, blocks per stage)
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}
EXPANSION = {"basic": 1, "bottleneck": 4}
# Name of the tied submodule of every `ResNetMTANHead`.
MTAN_TIED = "shared_blocks"


def stage_schedule(output_stride: int) -> tuple[tuple[int, int, int], ...]:
    """(stride, dilation of the first block's 3×3 conv, dilation of the others) per stage."""
    if output_stride == 32:
        return ((1, 1, 1), (2, 1, 1), (2, 1, 1), (2, 1, 1))
    if output_stride == 16:
        return ((1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 2))
    if output_stride == 8:
        return ((1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4))
    raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")


def _conv(features, kernel, *, dtype, stride=1, dilation=1):
    return conv(
        features,
        kernel,
        stride=stride,
        dilation=dilation,
        use_bias=False,
        kernel_init=KAIMING_FAN_OUT,
        dtype=dtype,
    )


class ResidualBlock(nn.Module):
    """torchvision BasicBlock (`kind="basic"`) or Bottleneck (`kind="bottleneck"`).

    The shortcut is Conv1×1(stride) + BatchNorm when the stride or the width changes.

    Attributes:
      kind: "basic" (two 3×3 convs) or "bottleneck" (1×1, 3×3, 1×1 with 4× expansion).
      planes: block width (output width is planes × expansion).
      stride: stride of the first 3×3 convolution (and of the shortcut).
      dilation: dilation of the first 3×3 convolution.
      dilation2: dilation of a basic block's second 3×3 convolution.
    """

    kind: str
    planes: int
    stride: int = 1
    dilation: int = 1
    dilation2: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        def conv_bn(y, features, kernel, *, stride=1, dilation=1):
            y = _conv(features, kernel, stride=stride, dilation=dilation, dtype=self.dtype)(y)
            return batch_norm(train=train, dtype=self.dtype)(y)

        planes, stride = self.planes, self.stride
        out_width = planes * EXPANSION[self.kind]
        if self.kind == "basic":
            out = nn.relu(conv_bn(x, planes, 3, stride=stride, dilation=self.dilation))
            out = conv_bn(out, planes, 3, dilation=self.dilation2)
        else:
            out = nn.relu(conv_bn(x, planes, 1))
            out = nn.relu(conv_bn(out, planes, 3, stride=stride, dilation=self.dilation))
            out = conv_bn(out, out_width, 1)
        if stride != 1 or x.shape[-1] != out_width:
            x = conv_bn(x, out_width, 1, stride=stride)
        return nn.relu(out + x)


class ResNetStage(nn.Module):
    """One ResNet stage ("layer1" … "layer4").

    Returns `(penultimate, output)`: the input of the stage's last block (what MTAN's
    attention reads) and the stage's output.
    """

    kind: str
    planes: int
    num_blocks: int
    stride: int = 1
    first_dilation: int = 1
    dilation: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        outputs = [x]
        for index in range(self.num_blocks):
            first = index == 0
            block = ResidualBlock(
                self.kind,
                self.planes,
                stride=self.stride if first else 1,
                dilation=self.first_dilation if first else self.dilation,
                dilation2=self.dilation,
                dtype=self.dtype,
            )
            outputs.append(block(outputs[-1], train=train))
        return outputs[-2], outputs[-1]


class ResNet(nn.Module):
    """ResNet-18/50 encoder, dilated to `output_stride` (8 by default).

    Stem: Conv7×7(width, stride 2, no bias) → BN → ReLU → 3×3/stride-2 max-pool (padding 1);
    then four stages of width `width · 2^i`.

    Attributes:
      depth: 18 or 50.
      width: stem / first-stage width (64 in the published models; smaller only in tests).
      output_stride: 8 (DeepLab / LibMTL default), 16 or 32 (no dilation).
      num_stages: how many of the four stages to build (cross-stitch builds the last one
        per task, in the heads).
      stage_features: return every stage's `(penultimate, output)` pair (MTAN) instead of
        the last stage's output.
      dtype: computation dtype.

    `__call__` returns [B, H/8, W/8, 512·e] (e = 1 for ResNet-18, 4 for ResNet-50), or a
    tuple of `num_stages` pairs with `stage_features`. `stem(x)` and `stage(i, x)` run the
    pieces one at a time (used by cross-stitch).
    """

    depth: int = 50
    width: int = 64
    output_stride: int = 8
    num_stages: int = 4
    stage_features: bool = False
    dtype: Dtype = jnp.float32

    def setup(self):
        if self.depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {self.depth}")
        kind, sizes = DEPTHS[self.depth]
        self.conv1 = _conv(self.width, 7, stride=2, dtype=self.dtype)
        self.bn1 = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        self.layers = [
            ResNetStage(kind, self.width * 2**i, sizes[i], *schedule, dtype=self.dtype)
            for i, schedule in enumerate(stage_schedule(self.output_stride)[: self.num_stages])
        ]

    def stem(self, x, *, train: bool):
        x = nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

    def stage(self, index: int, x, *, train: bool):
        return self.layers[index](x, train=train)

    def __call__(self, x, *, train: bool = True):
        x = self.stem(x, train=train)
        pairs = []
        for index in range(self.num_stages):
            pairs.append(self.stage(index, x, train=train))
            x = pairs[-1][1]
        return tuple(pairs) if self.stage_features else x


class ResNetEncoder(ResNet):
    """An image-classification encoder: the undilated ResNet (output stride 32), global
    average pool, then one hidden layer Dense(hidden) → BatchNorm → ReLU → Dropout.

    The shared encoder of LibMTL's Office-31 / Office-Home example
    (`examples/office/main.py`, class `Encoder`): torchvision's ResNet-18 without its
    classifier, `AdaptiveAvgPool2d(1)`, `Linear(512, 512)` (weights N(0, 0.005), bias
    0.1, as there), `BatchNorm1d`, ReLU, `Dropout(0.5)`. The ResNet's modules keep
    `ResNet`'s names, so torchvision weights load into them (`warm_start`) and the hidden
    layer stays fresh.

    Attributes (besides `ResNet`'s):
      hidden: width of the hidden layer.
      dropout: its dropout rate (training needs a "dropout" rng when > 0).

    `__call__` returns [B, hidden].
    """

    output_stride: int = 32
    hidden: int = 512
    dropout: float = 0.5

    def setup(self):
        super().setup()
        self.hidden_dense = nn.Dense(
            self.hidden,
            kernel_init=nn.initializers.normal(0.005),
            bias_init=nn.initializers.constant(0.1),
            dtype=self.dtype,
        )
        self.hidden_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype)
        self.hidden_dropout = nn.Dropout(self.dropout)

    def __call__(self, x, *, train: bool = True):
        x = global_average_pool(super().__call__(x, train=train))
        x = nn.relu(self.hidden_bn(self.hidden_dense(x), use_running_average=not train))
        return self.hidden_dropout(x, deterministic=not train)


def stage_widths(depth: int, width: int = 64) -> tuple[int, ...]:
    """Output widths of the four stages."""
    kind, _ = DEPTHS[depth]
    return tuple(width * 2**i * EXPANSION[kind] for i in range(4))


class ResNetAttentionBlocks(nn.Module):
    """MTAN's shared residual blocks between stages (three; none after the last stage).

    Block i maps stage i's attended features (width c_i) to width c_{i+1} with a
    projection shortcut, stride 1: BasicBlock(c_{i+1}) for ResNet-18,
    Bottleneck(c_{i+1} / 4) for ResNet-50, as in the reference code.
    """

    depth: int = 50
    width: int = 64
    dtype: Dtype = jnp.float32

    def setup(self):
        kind, _ = DEPTHS[self.depth]
        widths = stage_widths(self.depth, self.width)
        self.blocks = [
            ResidualBlock(kind, widths[i + 1] // EXPANSION[kind], dtype=self.dtype)
            for i in range(3)
        ]

    def apply_block(self, index: int, x, *, train: bool):
        return self.blocks[index](x, train=train)


class ResNetMTANHead(nn.Module):
    """One task's branch of MTAN on ResNet: four attention modules, then the task decoder.

    Stage i: mask `g_i(penultimate_i)` for i = 0, else `g_i([penultimate_i, a])`; then
    `a = mask · output_i`; for i < 3 the shared block i, and 2×2 max-pooling while `a` is
    larger than the next stage (once after stage 1 for output stride 8). Attention module
    i has width c_i and hidden width c_i / e (e = 4 for ResNet-50, 1 for ResNet-18).

    Attributes:
      decoder: the task's decoder on the attended last-stage features (a `DeepLabHead`
        for dense tasks, a pooled `MLPHead` for vector tasks).
      depth, width: of the ResNet trunk.
    """

    decoder: nn.Module
    depth: int = 50
    width: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        kind, _ = DEPTHS[self.depth]
        widths = stage_widths(self.depth, self.width)
        blocks = ResNetAttentionBlocks(self.depth, self.width, self.dtype, name=MTAN_TIED)
        x = None
        for i, (penultimate, output) in enumerate(rep):
            inputs = penultimate if x is None else jnp.concatenate([penultimate, x], axis=-1)
            mask = AttentionLayer(
                widths[i] // EXPANSION[kind],
                widths[i],
                kernel_init=TORCH_DEFAULT,
                dtype=self.dtype,
                name=f"encoder_att_{i}",
            )(inputs, train=train)
            x = mask * output
            if i < 3:
                x = blocks.apply_block(i, x, train=train)
                target = rep[i + 1][0].shape[1:3]
                while x.shape[1] > target[0] and x.shape[2] > target[1]:
                    x = max_pool_2x2(x)
                if x.shape[1:3] != target:
                    raise ValueError(
                        f"MTAN: attended features {x.shape[1:3]} cannot be pooled to stage "
                        f"{i + 2}'s resolution {target}; use an input size divisible by 32"
                    )
        return self.decoder(x, train=train)
