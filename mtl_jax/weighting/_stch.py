"""`stch`: smooth Tchebycheff scalarisation (Lin et al., ICML 2024)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import LOSS, Weighting


class STCHState(NamedTuple):
    """Warm-up bookkeeping for `stch`.

    Attributes:
      step: int32 scalar, the number of updates so far (the epoch is
        `step // steps_per_epoch`).
      loss_sum: [T] sum of the losses of the recording epoch (epoch `warmup_epochs`).
      nadir: [T] mean loss of the recording epoch, set when that epoch ends (ones
        before; not used until then).
    """

    step: jax.Array
    loss_sum: jax.Array
    nadir: jax.Array


def stch(
    *, steps_per_epoch: int, mu: float = 1.0, warmup_epochs: int = 4, eps: float = 1e-20
) -> Weighting:
    """Smooth Tchebycheff scalarisation, Lin et al., ICML 2024.

    "Smooth Tchebycheff Scalarization for Multi-Objective Optimization", Sec. 3: the
    Tchebycheff scalarisation `max_t λ_t (f_t − z_t)` is smoothed into

        g_μ(f) = μ · log Σ_t exp(λ_t (f_t − z_t) / μ),

    whose gradient with respect to `f` is `softmax(λ ⊙ (f − z) / μ) ⊙ λ`; as `μ → 0`
    all the weight goes to the task furthest above its reference point.

    For multi-task learning this follows the authors' code (`Xi-L/STCH`, STCH_MTL),
    which LibMTL's STCH copies, with LibMTL's defaults `μ = 1`, `warmup_epoch = 4`:

    * objectives are log-normalised losses `f_t = log(L_t / n_t)`, with `n_t` the
      mean loss of task t over one warm-up epoch, the reference point is `z = 0` and
      the preference uniform (`λ_t = 1`), so the "excess" of a task is
      `log L_t − log n_t`, and the scalarisation is multiplied by T;
    * the shared gradient is therefore `Σ_t w_t g_t` with

          w_t = T · softmax((log L − log n) / μ)_t / L_t,

      i.e. `w_t L_t / T` is the softmax of the scaled excess losses;
    * warm-up: during epochs `0 … warmup_epochs` (that is `warmup_epochs + 1`
      epochs, LibMTL's convention for `STCH_warmup_epoch`) the objective is
      `Σ_t log L_t`, i.e. `w_t = 1 / L_t` (`scale_invariant`); the losses of epoch
      `warmup_epochs` are averaged into `n`, and STCH starts with epoch
      `warmup_epochs + 1`.

    Deviations from LibMTL, none of which changes the weights for losses above ~`eps`:
    LibMTL guards the logs as `log(L + 1e-20)` and `log(L / n + 1e-20)`; here losses and
    `n` below `eps` are clamped to `eps`, which keeps every weight finite (at most
    `T / eps`) even for zero losses. The warm-up counts epochs from a step counter in
    the state instead of the trainer's epoch index. LibMTL back-propagates the
    scalarised objective into the heads as well; here they get their own unweighted
    gradient unless the trainer's `head_grads="weighted"`.

    Args:
      steps_per_epoch: number of `update` calls per epoch (required; positive).
      mu: smoothing parameter `μ > 0` (LibMTL: 1.0); smaller is closer to the max.
      warmup_epochs: LibMTL's `STCH_warmup_epoch` (default 4); ≥ 0. With 0 the first
        epoch both warms up and records `n`.
      eps: positive floor on the losses and on `n` (default `1e-20`, LibMTL's guard).

    Metrics: `log_excess` ([T], `log L − log n`, meaningful once STCH has started) and
    `warmup` (1.0 during the warm-up, 0.0 after).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import stch
      >>> w = stch(steps_per_epoch=500)
      >>> state = w.init(("depth", "segmentation"))
      >>> weights, state, _ = w.update(jnp.array([0.5, 2.0]), state, key=None)
      >>> weights.tolist()  # warm-up: 1 / L
      [2.0, 0.5]
    """
    if not isinstance(steps_per_epoch, int) or isinstance(steps_per_epoch, bool):
        raise ValueError(f"stch: steps_per_epoch must be an integer, got {steps_per_epoch!r}")
    if steps_per_epoch <= 0:
        raise ValueError(f"stch: steps_per_epoch must be positive, got {steps_per_epoch}")
    if not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu <= 0:
        raise ValueError(f"stch: mu must be a finite number > 0, got {mu!r}")
    if not isinstance(warmup_epochs, int) or isinstance(warmup_epochs, bool) or warmup_epochs < 0:
        raise ValueError(f"stch: warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"stch: eps must be a finite number > 0, got {eps!r}")
    # The update whose completion ends the recording epoch `warmup_epochs`.
    last_recording_step = (warmup_epochs + 1) * steps_per_epoch - 1

    def init(task_names):
        num_tasks = len(task_names)
        return STCHState(
            step=jnp.zeros((), jnp.int32),
            loss_sum=jnp.zeros((num_tasks,), jnp.float32),
            nadir=jnp.ones((num_tasks,), jnp.float32),
        )

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, gramian, rows
        num_tasks = losses.shape[0]
        clamped = jnp.maximum(losses.astype(jnp.float32), eps)
        log_excess = jnp.log(clamped) - jnp.log(state.nadir)
        stch_weights = num_tasks * jax.nn.softmax(log_excess / mu) / clamped
        epoch = state.step // steps_per_epoch
        warmup = epoch <= warmup_epochs
        weights = jnp.where(warmup, 1.0 / clamped, stch_weights)

        loss_sum = jnp.where(epoch == warmup_epochs, state.loss_sum + clamped, state.loss_sum)
        nadir = jnp.where(
            state.step == last_recording_step,
            jnp.maximum(loss_sum / steps_per_epoch, eps),
            state.nadir,
        )
        new_state = STCHState(step=state.step + 1, loss_sum=loss_sum, nadir=nadir)
        metrics = {"log_excess": log_excess, "warmup": warmup.astype(jnp.float32)}
        return weights, new_state, metrics

    return Weighting(init=init, update=update, kind=LOSS)
