"""`dwa`: dynamic weight average (Liu, Johns & Davison, CVPR 2019)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import LOSS, Weighting

_FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)


class DWAState(NamedTuple):
    """Epoch bookkeeping for `dwa`.

    Attributes:
      step: int32 scalar, the number of updates so far (the epoch is
        `step // steps_per_epoch`).
      epoch_loss_sum: [T] sum of the losses seen so far in the current epoch.
      epoch_means: [2, T] mean losses of the two most recent completed epochs, older
        first (zeros until those epochs have completed).
    """

    step: jax.Array
    epoch_loss_sum: jax.Array
    epoch_means: jax.Array


def dwa(*, steps_per_epoch: int, temperature: float = 2.0) -> Weighting:
    """Dynamic weight average, Liu et al., CVPR 2019, Eq. 1.

    Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention". Weights
    follow each task's rate of loss decrease over the previous epochs:

        w = T · softmax(r / τ),   r_t = L̄_t(e − 1) / L̄_t(e − 2),

    where `L̄_t(e)` is task t's mean training loss over epoch `e`, averaged over the
    epoch's steps (the reference code's per-epoch average of batch losses; LibMTL weights
    each batch loss by its batch size, the same when all batches have one size), and `τ` is
    the temperature. The weights sum to T. In the first two epochs (`e = 0, 1`) there are
    not two epoch means yet and `w_t = 1`, as in the paper and LibMTL. LibMTL also weights
    the heads' losses by `w`; here they get their own unweighted gradient unless the
    trainer's `head_grads="weighted"`.

    Epoch boundaries come from a step counter in the state: every `steps_per_epoch`
    updates close an epoch. Pass the number of training steps per epoch of your data
    (with a partial last batch dropped, that is `⌊N / batch⌋`). Where the older epoch
    mean is zero (the loss was zero throughout that epoch) the ratio is taken as 1;
    ratios too large for float32 are clipped to its maximum, so the weights stay finite.

    Args:
      steps_per_epoch: number of `update` calls per epoch (required; positive).
      temperature: softmax temperature `τ` (LibMTL's `T`, default 2.0); larger values
        make the weights more equal.

    Metrics: `loss_ratio`, the [T] ratios `r` (ones until two epochs have completed).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import dwa
      >>> w = dwa(steps_per_epoch=100)
      >>> weights, state, _ = w.update(jnp.array([0.3, 2.0]), w.init(("a", "b")), key=None)
      >>> weights.tolist()  # first epoch
      [1.0, 1.0]
    """
    if not isinstance(steps_per_epoch, int) or isinstance(steps_per_epoch, bool):
        raise ValueError(f"dwa: steps_per_epoch must be an integer, got {steps_per_epoch!r}")
    if steps_per_epoch <= 0:
        raise ValueError(f"dwa: steps_per_epoch must be positive, got {steps_per_epoch}")
    if (
        not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"dwa: temperature must be a finite number > 0, got {temperature!r}")

    def init(task_names):
        num_tasks = len(task_names)
        return DWAState(
            step=jnp.zeros((), jnp.int32),
            epoch_loss_sum=jnp.zeros((num_tasks,), jnp.float32),
            epoch_means=jnp.zeros((2, num_tasks), jnp.float32),
        )

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        num_tasks = losses.shape[0]
        older, newer = state.epoch_means[0], state.epoch_means[1]
        positive = older > 0
        ratio = jnp.where(positive, newer / jnp.where(positive, older, 1.0), 1.0)
        ratio = jnp.minimum(ratio, _FLOAT32_MAX)
        epoch = state.step // steps_per_epoch
        weights = jnp.where(
            epoch >= 2,
            num_tasks * jax.nn.softmax(ratio / temperature),
            jnp.ones((num_tasks,), jnp.float32),
        )

        loss_sum = state.epoch_loss_sum + losses.astype(jnp.float32)
        closes_epoch = (state.step + 1) % steps_per_epoch == 0
        epoch_means = jnp.where(
            closes_epoch, jnp.stack([newer, loss_sum / steps_per_epoch]), state.epoch_means
        )
        new_state = DWAState(
            step=state.step + 1,
            epoch_loss_sum=jnp.where(closes_epoch, 0.0, loss_sum),
            epoch_means=epoch_means,
        )
        return weights, new_state, {"loss_ratio": ratio}

    return Weighting(init=init, update=update, kind=LOSS)
