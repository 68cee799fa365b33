"""Per-element losses and the one reduction every task loss goes through.

Each task loss returns per-element values and a validity mask of the same shape
(per example for classification, per pixel for dense tasks). `masked_mean` is the
only place where they are reduced, so ignore labels, invalid pixels and padded
examples are honoured identically everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_sum(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(Σ values·mask, Σ mask)` as float32 scalars: the additive form of `masked_mean`.

    Args:
      values: float array of any shape.
      mask: array broadcastable to `values`; nonzero marks a valid element.
    """
    mask = jnp.broadcast_to(mask, values.shape).astype(jnp.float32)
    return jnp.sum(values.astype(jnp.float32) * mask), jnp.sum(mask)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` over the elements where `mask` is true; 0 when none is (float32)."""
    total, count = masked_sum(values, mask)
    return total / jnp.maximum(count, 1.0)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of integer `labels` under `logits[..., C]`; labels out of range give 0.

    The caller masks invalid labels; clipping here only keeps the gather in bounds.
    """
    num_classes = logits.shape[-1]
    safe = jnp.clip(labels, 0, num_classes - 1)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Element-wise BCE of {0, 1} `labels` under `logits`, computed stably in float32."""
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.float32)
    return jnp.maximum(logits, 0.0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def class_balanced_bce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-pixel class-balanced BCE of Xie & Tu (HED, ICCV 2015, Eq. 2).

    Within each image, positive pixels are weighted by `β = |Y−| / |Y|` and negative
    pixels by `1 − β`, computed over that image's valid pixels, so that the rare edge
    pixels are not drowned by the background. Weights are scaled by 2 so that a
    half-positive image gets weight 1 everywhere.

    Args:
      logits: [B, H, W] edge logits.
      labels: [B, H, W] in {0, 1}.
      mask: [B, H, W] validity.

    Returns:
      [B, H, W] weighted per-pixel losses (reduce them with `masked_mean`).
    """
    labels = labels.astype(jnp.float32)
    valid = mask.astype(jnp.float32)
    axes = tuple(range(1, labels.ndim))
    positives = jnp.sum(labels * valid, axis=axes, keepdims=True)
    total = jnp.maximum(jnp.sum(valid, axis=axes, keepdims=True), 1.0)
    beta = 1.0 - positives / total  # fraction of negatives
    weight = 2.0 * jnp.where(labels > 0.5, beta, 1.0 - beta)
    return weight * sigmoid_binary_cross_entropy(logits, labels)
