"""`excess_mtl`: task weights from excess-risk estimates (He et al., ICML 2024)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.row_math import combine
from mtl_jax.weighting._base import JACOBIAN, Weighting

# AdaGrad's constant inside the square root of the curvature estimate (the paper's code).
_CURVATURE_EPS = 1e-7
# Largest logit increment of one update: a gap of 100 already makes the softmax one-hot in
# float32 (e^-100 < 1e-43), so a larger one only risks inf − inf.
_MAX_INCREMENT = 100.0


class ExcessMTLState(NamedTuple):
    """Update count, AdaGrad accumulators `Σ_s g_s²` ([T, *row] per leaf), the baseline
    excess-risk estimates [T] (during the warm-up, the running sum of the estimates) and the
    log-weights [T] (`λ = softmax`)."""

    step: jax.Array
    grad_sq_sum: Any
    initial_risk: jax.Array
    log_weights: jax.Array


def excess_mtl(*, robust_step_size: float = 1e-2, n_warmup_steps: int = 1) -> Weighting:
    """ExcessMTL, He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024,
    Alg. 1 (in the authors' LibMTL code).

    A task's excess risk (its loss minus the best loss it could reach) is estimated from
    a second-order expansion around the optimum, `ε_t ≈ g_tᵀ H_t⁻¹ g_t` (the constant ½
    cancels below), with the diagonal curvature `H_t = diag(√(Σ_s g_{t,s}² + 1e-7))` of
    AdaGrad accumulated over all updates so far. The estimates are normalised by those of
    the first update, `r_t = ε_t / ε_t⁽¹⁾`, and the weights take one exponentiated-gradient
    (multiplicative) step on the simplex, `λ_t ← λ_t e^{η r_t} / Σ_s λ_s e^{η r_s}`, from
    `λ = 1/T`; the first update only records `ε⁽¹⁾`. Tasks far from their optimum
    relative to where they started gain weight; label noise, which raises the loss but
    not the excess risk, does not.

    Warm-up (torchjd's `ExcessMTLWeighting(n_warmup_steps=...)`, read in its `forward`;
    the paper's Appendix C.1): for the first `K = n_warmup_steps` updates the weights stay
    uniform while the curvature accumulates, and the baseline is the mean of their
    estimates, `ε⁽¹⁾ = (1/K) Σ_{k ≤ K} ε⁽ᵏ⁾`; update `K + 1` is the first to take a step,
    with `r_t = ε_t / ε_t⁽¹⁾`. `K = 1`, the default, is the description above (the authors'
    code, LibMTL and torchjd's default) and gives today's numbers bit for bit. `K = 0`
    follows torchjd: the first update records `ε⁽¹⁾ = ε` and steps with the raw estimates
    `r_t = ε_t` (not normalised, so its size depends on the gradients' scale; the increment
    cap below bounds it). The paper recommends three epochs of warm-up,
    `K = 3 · steps_per_epoch`. torchjd divides by `ε⁽¹⁾ + 1e-7` where we divide by `ε⁽¹⁾`
    (0 where `ε⁽¹⁾ = 0`).

    The shared gradient is `d = Σ_t T λ_t g_t`: the loss weights `T λ` sum to `T`, so that
    the first update equals `equal()`'s, as in the authors' code. LibMTL's `ExcessMTL`
    (taken from that code) back-propagates `Σ_t T λ_t L_t`, so its heads are weighted too;
    here each head gets its own unweighted gradient. In `rep_grad` mode the coordinates
    of the curvature are the (example, feature) entries of the representation gradients
    (LibMTL's code sums them over the batch first, but its `autograd` gradient mode fills
    no representation gradients, so they are zero there and the ratios are `0/0`).

    λ is kept as log-weights shifted to a maximum of 0, which is the same multiplicative
    update without overflow; a task whose first estimate is zero (a zero gradient) gets
    `r_t = 0` instead of the reference's division by zero, and one increment is capped at
    100 (beyond which the softmax is one-hot anyway).

    Args:
      robust_step_size: `η > 0` (the paper's code and LibMTL: 1e-2).
      n_warmup_steps: `K ≥ 0`, the number of updates with uniform weights whose mean
        estimate becomes the baseline (torchjd's name and default, 1; see above).

    Metrics: `weights` [T], the loss weights `T λ`; `excess_risk` [T], `r_t` (0 during the
    warm-up).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, excess_mtl
      >>> J = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> direction, _, state = aggregate(excess_mtl(), J)
      >>> direction.tolist()  # the first update uses the weights 1
      [1.0, 2.0]
    """
    if (
        not isinstance(robust_step_size, int | float)
        or isinstance(robust_step_size, bool)
        or not 0.0 < robust_step_size < float("inf")
    ):
        raise ValueError(
            f"excess_mtl: robust_step_size must be a finite number > 0, got {robust_step_size!r}"
        )
    if (
        not isinstance(n_warmup_steps, int | np.integer)
        or isinstance(n_warmup_steps, bool)
        or not 0 <= n_warmup_steps < 2**31 - 1
    ):
        raise ValueError(
            f"excess_mtl: n_warmup_steps must be an integer >= 0, got {n_warmup_steps!r}"
        )
    n_warmup_steps = int(n_warmup_steps)

    def init(task_names, row):
        num_tasks = len(task_names)
        grad_sq_sum = jax.tree.map(lambda s: jnp.zeros((num_tasks, *s.shape), s.dtype), row)
        # Two separate buffers: the trainer donates the state, and a buffer cannot be
        # donated twice.
        initial_risk = jnp.zeros((num_tasks,), jnp.float32)
        log_weights = jnp.zeros((num_tasks,), jnp.float32)
        return ExcessMTLState(jnp.zeros((), jnp.int32), grad_sq_sum, initial_risk, log_weights)

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, gramian
        grad_sq_sum = jax.tree.map(lambda a, g: a + jnp.square(g), state.grad_sq_sum, rows)

        def leaf_risk(acc, g):
            g = g.astype(jnp.float32)
            curvature = jnp.sqrt(acc.astype(jnp.float32) + _CURVATURE_EPS)
            return jnp.sum((jnp.square(g) / curvature).reshape(g.shape[0], -1), axis=1)

        risk = sum(jax.tree.leaves(jax.tree.map(leaf_risk, grad_sq_sum, rows)))
        if n_warmup_steps > 0:
            # Warm-up sums the estimates (no step: ratio 0); the first update after it
            # turns the sum into their mean (for K = 1, `0 + ε` and `ε / 1` are ε exactly).
            held, held_ratio = state.step < n_warmup_steps, 0.0
            baseline = jnp.where(
                state.step == n_warmup_steps,
                state.initial_risk / n_warmup_steps,
                state.initial_risk,
            )
            initial_risk = jnp.where(held, state.initial_risk + risk, baseline)
        else:
            # torchjd's n_warmup_steps=0: the first estimate is the baseline and its raw
            # value drives the first step.
            held, held_ratio = state.step == 0, risk
            initial_risk = jnp.where(held, risk, state.initial_risk)
        ratio = jnp.where(
            initial_risk > 0, risk / jnp.where(initial_risk > 0, initial_risk, 1.0), 0.0
        )
        ratio = jnp.where(held, held_ratio, ratio)
        increment = jnp.minimum(robust_step_size * ratio, _MAX_INCREMENT)
        log_weights = state.log_weights + increment
        log_weights = log_weights - jnp.max(log_weights)
        num_tasks = risk.shape[0]
        loss_weights = num_tasks * jax.nn.softmax(log_weights)
        new_state = ExcessMTLState(state.step + 1, grad_sq_sum, initial_risk, log_weights)
        metrics = {"weights": loss_weights, "excess_risk": ratio}
        return combine(loss_weights, rows), new_state, metrics

    return Weighting(init=init, update=update, kind=JACOBIAN)
