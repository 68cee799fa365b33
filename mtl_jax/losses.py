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


def _label_log_probs(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(log p_y, log(1 − p_y))` under `softmax(logits)`, both computed without `1 − p`.

    `log(1 − p_y)` is `logsumexp` over the other classes minus `logsumexp` over all, so
    it stays accurate (and its gradient finite) when `p_y` rounds to 1 in float32.
    """
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    safe = jnp.clip(labels, 0, num_classes - 1)
    is_label = jax.nn.one_hot(safe, num_classes, dtype=jnp.bool_)
    others = jax.nn.logsumexp(jnp.where(is_label, -jnp.inf, logits), axis=-1)
    log_not_p = others - jax.nn.logsumexp(logits, axis=-1)
    return -softmax_cross_entropy(logits, labels), log_not_p


def focal_cross_entropy(logits: jax.Array, labels: jax.Array, gamma: float) -> jax.Array:
    """Multi-class focal loss `−(1 − p_y)^γ log p_y` (Lin et al., ICCV 2017, Eq. 4).

    `p_y = softmax(logits)_y`; `γ = 0` is `softmax_cross_entropy`. The modulating factor
    is `exp(γ log(1 − p_y))`, so confidently-correct examples contribute almost nothing
    while badly-classified ones keep nearly their cross-entropy. Per-class α (Eq. 5) is
    a per-example weight the caller multiplies in.

    Args:
      logits: [..., C] float logits (C ≥ 2).
      labels: [...] integer labels; out-of-range labels give finite values to be masked.
      gamma: focusing parameter γ ≥ 0.

    Returns:
      [...] float32 per-example losses.

    Examples:
        >>> logits, labels = jnp.array([[4.0, 0.0], [0.0, 4.0]]), jnp.array([0, 0])
        >>> ratio = focal_cross_entropy(logits, labels, 2.0) / softmax_cross_entropy(logits, labels)
        >>> [f"{float(r):.2g}" for r in ratio]  # (1 − p_y)²: the easy example nearly vanishes
        ['0.00032', '0.96']
    """
    log_p, log_not_p = _label_log_probs(logits, labels)
    if gamma == 0:
        return -log_p
    return -jnp.exp(gamma * log_not_p) * log_p


def adjusted_cross_entropy(
    logits: jax.Array, labels: jax.Array, log_prior_shift: jax.Array
) -> jax.Array:
    """Cross-entropy of `logits + log_prior_shift`: the logit-adjusted loss.

    With `log_prior_shift = τ log π` (π the train-split class prior) this is Menon et
    al.'s logit-adjusted softmax cross-entropy (ICLR 2021, Eq. 10),
    `−log softmax(f(x) + τ log π)_y`; with τ = 1 it is Ren et al.'s Balanced Softmax
    (NeurIPS 2020, Eq. 4). The shift is only for training: predictions stay `logits`.

    Args:
      logits: [..., C] float logits.
      labels: [...] integer labels (out-of-range labels give values to be masked).
      log_prior_shift: [C] added to every example's logits.

    Returns:
      [...] float32 per-example losses.
    """
    shifted = logits.astype(jnp.float32) + jnp.asarray(log_prior_shift, jnp.float32)
    return softmax_cross_entropy(shifted, labels)


def sigmoid_focal_loss(
    logits: jax.Array, labels: jax.Array, gamma: float, alpha: float | None = None
) -> jax.Array:
    """Element-wise binary focal loss `−α_t (1 − p_t)^γ log p_t` (Lin et al., Eq. 5).

    `p_t = σ(z)` for a positive label and `1 − σ(z)` for a negative one; `α_t = α` for
    positives and `1 − α` for negatives, or 1 for both when `alpha` is None (Eq. 4).
    `γ = 0, alpha = None` is `sigmoid_binary_cross_entropy`. Both logs are log-sigmoids
    of `±z`, stable in float32 at any logit.

    Args:
      logits: float logits, any shape.
      labels: {0, 1} labels, the shape of `logits`.
      gamma: focusing parameter γ ≥ 0.
      alpha: weight of the positive class in [0, 1], or None.

    Returns:
      Element-wise float32 losses, the shape of `logits`.
    """
    positive = labels > 0.5
    logits_t = jnp.where(positive, 1.0, -1.0) * logits.astype(jnp.float32)
    loss = -jax.nn.log_sigmoid(logits_t)
    if gamma != 0:
        loss = jnp.exp(gamma * jax.nn.log_sigmoid(-logits_t)) * loss
    if alpha is not None:
        loss = jnp.where(positive, alpha, 1.0 - alpha) * loss
    return loss
