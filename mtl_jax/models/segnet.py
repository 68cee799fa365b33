"""SegNet and SegNet-MTAN, the dense-prediction models of the NYUv2 / Cityscapes protocol.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019 (MTAN),
as implemented in the authors' code and reused unchanged (up to the number of tasks) by
Nash-MTL, FAMO and LibMTL's SegNet examples:

* SegNet: a VGG-16-like encoder-decoder with five levels of filters 64/128/256/512/512;
  every convolution is 3×3 with bias, followed by BatchNorm and ReLU ("conv layer");
  pooling is 2×2 max-pooling whose indices drive the decoder's max-unpooling.
* HPS ("split, standard" in the MTAN paper): the shared encoder-decoder, then per task a
  Conv3×3(64) → Conv1×1(C) prediction layer (`SegNetHead`).
* MTAN: the same shared network, plus per task one attention module per encoder and per
  decoder level, which masks the shared features; between levels the masked features pass
  through one 3×3 "conv layer" whose weights are shared by all tasks (`tied` in
  `MultiTaskModel`). The trunk returns all shared features; `SegNetMTANHead` holds the
  task's attention modules and prediction layer.

Parameters (NYUv2, outputs 13 / 1 / 3; Cityscapes, 7 / 1), counted by hand from the
reference code and checked in tests/test_segnet.py:

* shared SegNet 24,943,296; prediction layers 36,928 + 65·C;
* MTAN tied attention blocks 10,220,160 (shared); attention modules 2,984,576 per task;
* SegNet-MTAN NYUv2 total 44,229,073 — 1.77× one single-task SegNet (24,981,069), the
  "#P." the MTAN paper's Table 3 lists for MTAN.

Differences from the PyTorch code:

* outputs are logits: the reference returns log-softmax for segmentation and unit-
  normalised normals; here the task losses do both, so the losses are the same;
* the tied blocks keep per-task BatchNorm running statistics (training is identical;
  evaluation normalises each task's features with its own averages, see
  `mtl_jax.models.multitask`);
* ownership: Nash-MTL's and FAMO's `SegNetMtan.shared_parameters()` is everything but the
  prediction layers, so their gradient methods see the attention modules as shared (each
  adds only its own task's gradient, on the Gramian's diagonal); here they are task-owned.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models.layers import (
    XAVIER_NORMAL,
    Dtype,
    batch_norm,
    conv,
    max_pool_2x2,
    max_pool_with_indices,
    max_unpool,
    resize_align_corners,
)

FILTERS = (64, 128, 256, 512, 512)
# Name of the tied submodule of every `SegNetMTANHead`.
MTAN_TIED = "shared_blocks"


class ConvLayer(nn.Module):
    """SegNet's "conv layer": Conv3×3 (with bias) → BatchNorm → ReLU."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = conv(self.features, 3, kernel_init=XAVIER_NORMAL, dtype=self.dtype)(x)
        return nn.relu(batch_norm(train=train, dtype=self.dtype)(x))


def _check_filters(filters: Sequence[int]) -> None:
    if len(filters) != 5 or filters[3] != filters[4]:
        raise ValueError(
            f"SegNet needs 5 filter widths with the last two equal, got {tuple(filters)}"
        )


class SegNet(nn.Module):
    """The shared SegNet encoder-decoder.

    Level i (0…4) of the encoder: `encoder_block_i` (ConvLayer to filters[i]) then
    `conv_block_enc_i` (one ConvLayer for i < 2, two for i ≥ 2), then 2×2 max-pooling with
    indices. The decoder mirrors it from level 4 up: max-unpooling, `decoder_block_i`
    (to filters[max(i-1, 0)]) and `conv_block_dec_i` (one ConvLayer for i < 2, two else).

    Attributes:
      filters: widths of the five levels (64, 128, 256, 512, 512 in the published model).
      all_features: return every shared feature MTAN attends to instead of the last map.
      dtype: computation dtype.

    Returns:
      [B, H, W, filters[0]] or, with `all_features`, a dict of four 5-tuples:
      `encoder_in` / `encoder_out` (level i's map after `encoder_block_i` / after
      `conv_block_enc_i`, level 0 first) and `decoder_in` / `decoder_out` (each decoder
      level's unpooled input / output, deepest level first, as the decoder runs).
      H and W must be multiples of 32.
    """

    filters: Sequence[int] = FILTERS
    all_features: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        _check_filters(self.filters)
        if x.shape[1] % 32 or x.shape[2] % 32:
            raise ValueError(f"SegNet needs height and width divisible by 32, got {x.shape}")
        f = tuple(self.filters)

        def layers(y, features, count, name):
            for k in range(count):
                y = ConvLayer(features, self.dtype, name=f"{name}_{k}")(y, train=train)
            return y

        encoder_in, encoder_out, indices = [], [], []
        for i in range(5):
            x = ConvLayer(f[i], self.dtype, name=f"encoder_block_{i}")(x, train=train)
            encoder_in.append(x)
            x = layers(x, f[i], 1 if i < 2 else 2, f"conv_block_enc_{i}")
            encoder_out.append(x)
            x, index = max_pool_with_indices(x)
            indices.append(index)
        decoder_in, decoder_out = [], []
        for i in reversed(range(5)):
            x = max_unpool(x, indices[i])
            decoder_in.append(x)
            width = f[max(i - 1, 0)]
            x = ConvLayer(width, self.dtype, name=f"decoder_block_{i}")(x, train=train)
            x = layers(x, width, 1 if i < 2 else 2, f"conv_block_dec_{i}")
            decoder_out.append(x)
        if not self.all_features:
            return x
        return {
            "encoder_in": tuple(encoder_in),
            "encoder_out": tuple(encoder_out),
            "decoder_in": tuple(decoder_in),
            "decoder_out": tuple(decoder_out),
        }


class PredictionLayer(nn.Module):
    """SegNet's task prediction layer: Conv3×3(width, bias) → Conv1×1(C, bias), no activation."""

    num_outputs: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = conv(x.shape[-1], 3, kernel_init=XAVIER_NORMAL, dtype=self.dtype)(x)
        return conv(self.num_outputs, 1, kernel_init=XAVIER_NORMAL, dtype=self.dtype)(x)


def _check_output(shape, output_shape) -> None:
    if tuple(shape[1:3]) != tuple(output_shape[:2]):
        raise ValueError(
            f"SegNet predicts at the input resolution {tuple(shape[1:3])}, but the task's "
            f"output is {tuple(output_shape[:2])}"
        )


class SegNetHead(nn.Module):
    """Hard-parameter-sharing SegNet head: the prediction layer on the decoder output.

    Attributes:
      output_shape: (H, W, C); H×W must be the input resolution.
    """

    output_shape: tuple[int, int, int]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        del train
        _check_output(rep.shape, self.output_shape)
        return PredictionLayer(self.output_shape[2], self.dtype)(rep)


class AttentionLayer(nn.Module):
    """MTAN attention mask g: Conv1×1 → BN → ReLU → Conv1×1 → BN → sigmoid (biased convs)."""

    hidden: int
    features: int
    kernel_init: nn.initializers.Initializer = XAVIER_NORMAL
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = conv(self.hidden, 1, kernel_init=self.kernel_init, dtype=self.dtype)(x)
        x = nn.relu(batch_norm(train=train, dtype=self.dtype)(x))
        x = conv(self.features, 1, kernel_init=self.kernel_init, dtype=self.dtype)(x)
        return nn.sigmoid(batch_norm(train=train, dtype=self.dtype)(x))


class SegNetAttentionBlocks(nn.Module):
    """The attention "f" blocks of SegNet-MTAN, one ConvLayer per level, shared by all tasks.

    `encode(i, x)`: level i's block after the encoder mask (to filters[min(i + 1, 4)]);
    `decode(i, x)`: level i's block before the decoder mask (to filters[0] for i = 0,
    filters[i - 1] for 1 ≤ i ≤ 3, filters[4] for i = 4).
    """

    filters: Sequence[int] = FILTERS
    dtype: Dtype = jnp.float32

    def setup(self):
        f = tuple(self.filters)
        self.encoder = [ConvLayer(f[min(i + 1, 4)], self.dtype) for i in range(5)]
        decoder_widths = (f[0], f[0], f[1], f[2], f[4])
        self.decoder = [ConvLayer(width, self.dtype) for width in decoder_widths]

    def encode(self, level: int, x, *, train: bool):
        return self.encoder[level](x, train=train)

    def decode(self, level: int, x, *, train: bool):
        return self.decoder[level](x, train=train)


class SegNetMTANHead(nn.Module):
    """One task's branch of SegNet-MTAN: its attention modules and its prediction layer.

    Encoder level i: mask `a = g_enc_i(u_i)` (u_0 = `encoder_in[0]`, else the concatenation
    of `encoder_in[i]` and the previous level's output), `a · encoder_out[i]`, the shared
    block `encode(i)` and 2×2 max-pooling. Decoder level i (deepest first): ×2 bilinear
    upsampling (align_corners=True), the shared block `decode(i)`, mask
    `g_dec_i([decoder_in, ·])` times `decoder_out`. Then the prediction layer.
    (Liu et al. 2019, Sec. 3.2 and Fig. 2.)

    Attributes:
      output_shape: (H, W, C); H×W must be the input resolution.
      filters: the SegNet widths.
    """

    output_shape: tuple[int, int, int]
    filters: Sequence[int] = FILTERS
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        _check_filters(self.filters)
        f = tuple(self.filters)
        _check_output(rep["decoder_out"][-1].shape, self.output_shape)
        blocks = SegNetAttentionBlocks(self.filters, self.dtype, name=MTAN_TIED)
        x = None
        for i in range(5):
            inputs = rep["encoder_in"][i]
            if x is not None:
                inputs = jnp.concatenate([inputs, x], axis=-1)
            mask = AttentionLayer(f[i], f[i], dtype=self.dtype, name=f"encoder_att_{i}")(
                inputs, train=train
            )
            x = max_pool_2x2(blocks.encode(i, mask * rep["encoder_out"][i], train=train))
        for j, level in enumerate(reversed(range(5))):
            x = resize_align_corners(x, (2 * x.shape[1], 2 * x.shape[2]))
            x = blocks.decode(level, x, train=train)
            width = f[max(level - 1, 0)]
            mask = AttentionLayer(width, width, dtype=self.dtype, name=f"decoder_att_{level}")(
                jnp.concatenate([rep["decoder_in"][j], x], axis=-1), train=train
            )
            x = mask * rep["decoder_out"][j]
        return PredictionLayer(self.output_shape[2], self.dtype, name="pred")(x)
