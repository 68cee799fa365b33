"""`modo`: multi-objective gradient with double sampling (Chen, Fernando, Ying & Chen,
NeurIPS 2023)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._simplex import project_onto_simplex, uniform_weights


class MoDoState(NamedTuple):
    """The simplex weights `λ` [T], one projected step per training step."""

    weights: jax.Array


def modo(*, gamma: float = 1e-3, rho: float = 0.1) -> Weighting:
    """MoDo, Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective
    Learning: Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023,
    Algorithm 1.

    One projected stochastic-gradient step per training step on MGDA's weight problem
    `min_{λ ∈ Δ} ½ ‖J λ‖² + ρ/2 ‖λ‖²`, with the product `J Jᵀ λ` estimated without bias
    from two independent mini-batches (double sampling):
    `λ ← Π_Δ(λ − γ (J_1 J_2ᵀ λ + ρ λ))`, then the update `J_3ᵀ λ` from a third. A
    multi-batch method (`batches=3`): the train step passes `G = J_0 J_1ᵀ` of batches 0
    and 1, combines batch 2's rows with the returned `λ` (the new one, as LibMTL's
    `MoDo` does), and gives each head the mean of its gradients over the three batches
    (LibMTL divides the heads' accumulated gradients by 3). Defaults are LibMTL's
    (`MoDo_gamma` 1e-3, `MoDo_rho` 0.1). Not available with `rep_grad` (as in LibMTL).

    Args:
      gamma: γ > 0, the step size on λ.
      rho: ρ ≥ 0, the ℓ2 regularisation of λ.

    Metrics: `weight_step`, `‖λ_new − λ_old‖₁`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import modo
      >>> w = modo(gamma=0.1, rho=0.0)
      >>> state = w.init(("a", "b"))
      >>> gram = jnp.diag(jnp.array([1.0, 4.0]))  # MGDA's weights: (0.8, 0.2)
      >>> for _ in range(200):
      ...     weights, state, _ = w.update(None, state, key=None, gramian=gram)
      >>> [round(float(x), 3) for x in weights]
      [0.8, 0.2]
    """
    if not gamma > 0:
        raise ValueError(f"modo: gamma must be > 0, got {gamma}")
    if not rho >= 0:
        raise ValueError(f"modo: rho must be >= 0, got {rho}")

    def init(task_names):
        return MoDoState(weights=uniform_weights(task_names))

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        old = state.weights
        new = project_onto_simplex(old - gamma * (gramian.astype(jnp.float32) @ old + rho * old))
        return new, MoDoState(weights=new), {"weight_step": jnp.sum(jnp.abs(new - old))}

    return Weighting(init=init, update=update, kind=GRAMIAN, batches=3)
