"""`sdmgrad`: stochastic direction-oriented multi-objective gradient descent
(Xiao, Ban & Ji, NeurIPS 2023)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._simplex import project_onto_simplex, uniform_weights


class SDMGradState(NamedTuple):
    """The simplex weights `w` [T], kept from step to step (warm start)."""

    weights: jax.Array


def sdmgrad(
    *, omega: float = 0.3, iterations: int = 20, lr: float = 5.0, momentum: float = 0.5
) -> Weighting:
    """SDMGrad, Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and
    Provable Stochastic Algorithms", NeurIPS 2023, Algorithm 1.

    The direction `d = (J_ρᵀ w + ω ḡ_ρ) / (1 + ω)`, `ḡ = (1/T) Σ_t g_t`, is the
    MGDA-like direction regularised toward the mean gradient, with `w` on the simplex Δ
    minimising `½ ‖J_ξᵀ w‖² + ω ⟨J_ξᵀ w, ḡ_ζ⟩`, whose stochastic gradient
    `(J_ξ J_ζᵀ) w + ω (J_ξ J_ζᵀ) 1 / T` is estimated without bias from two independent
    mini-batches ξ, ζ (double sampling), and the update uses a third, ρ. A multi-batch
    method (`batches=3`): the train step passes the cross-Gramian `G = J_0 J_1ᵀ` of
    batches 0 and 1 and combines the rows of batch 2 with the returned weights
    `(w + ω/T) / (1 + ω)`.

    Each step runs `iterations` projected heavy-ball steps from the previous step's `w`
    (a fresh momentum buffer every step), on `G` scaled by the squared mean of
    `sqrt(max(G_tt, 0))` (+1e-8), as LibMTL's `SDMGrad` (from the authors' code) does:
    `b ← μ b + (G w + ω G 1/T)` (`b` = the first gradient at the first iteration),
    `w ← Π_Δ(w − lr · b)`. Defaults are LibMTL's (`SDMGrad_lamda` 0.3, `SDMGrad_niter`
    20; its SGD with lr 5 and momentum 0.5). LibMTL uses batch 0 for the update and 1, 2
    for `G` (the same in distribution) and accumulates the heads' gradients over the
    three batches (their sum); here every head gets the mean of its gradients over the
    three batches (`mtl_jax.train`), as LibMTL's MoDo does. Not available with
    `rep_grad` (as in LibMTL).

    Args:
      omega: ω ≥ 0, the pull toward the mean direction (∞ gives `equal`'s mean).
      iterations: projected steps on `w` per training step (≥ 1).
      lr: their step size (> 0).
      momentum: their heavy-ball momentum, in [0, 1).

    Metrics: `objective`, `½ wᵀ G w + ω wᵀ G 1/T` at the final `w` (scaled `G`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import sdmgrad
      >>> w = sdmgrad(omega=0.0, iterations=200, lr=0.5)
      >>> gram = jnp.diag(jnp.array([1.0, 4.0]))  # MGDA's weights: (0.8, 0.2)
      >>> weights, _, _ = w.update(None, w.init(("a", "b")), key=None, gramian=gram)
      >>> [round(float(x), 3) for x in weights]
      [0.8, 0.2]
    """
    if not omega >= 0:
        raise ValueError(f"sdmgrad: omega must be >= 0, got {omega}")
    if not (isinstance(iterations, int) and iterations >= 1):
        raise ValueError(f"sdmgrad: iterations must be an integer >= 1, got {iterations!r}")
    if not lr > 0:
        raise ValueError(f"sdmgrad: lr must be > 0, got {lr}")
    if not 0 <= momentum < 1:
        raise ValueError(f"sdmgrad: momentum must be in [0, 1), got {momentum}")

    def init(task_names):
        return SDMGradState(weights=uniform_weights(task_names))

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        gram = gramian.astype(jnp.float32)
        num_tasks = gram.shape[0]
        scale = jnp.mean(jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0)))
        gram = gram / (scale**2 + 1e-8)
        pull = omega * jnp.mean(gram, axis=1)

        def body(index, carry):
            w, buffer = carry
            grad = gram @ w + pull
            buffer = jnp.where(index == 0, grad, momentum * buffer + grad)
            return project_onto_simplex(w - lr * buffer), buffer

        w, _ = jax.lax.fori_loop(0, iterations, body, (state.weights, jnp.zeros(num_tasks)))
        weights = (w + omega / num_tasks) / (1.0 + omega)
        objective = 0.5 * w @ gram @ w + w @ pull
        return weights, SDMGradState(weights=w), {"objective": objective}

    return Weighting(init=init, update=update, kind=GRAMIAN, batches=3)
