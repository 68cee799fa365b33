"""Euclidean projection onto the probability simplex, for methods that take projected
gradient steps on task weights (SDMGrad, MoDo)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def uniform_weights(task_names) -> jax.Array:
    """[T] float32 `1/T`: the simplex centre, where projected methods start."""
    return jnp.full((len(task_names),), 1.0 / len(task_names), jnp.float32)


def project_onto_simplex(v: jax.Array) -> jax.Array:
    """`argmin_{w ∈ Δ} ‖w − v‖` for [T] `v`, `Δ = {w ≥ 0, Σ w = 1}`.

    The sort-based rule (Held, Wolfe & Crowder 1974; Duchi et al., ICML 2008, Fig. 1):
    with `u` sorted descending, `ρ = max{j : u_j − (Σ_{i≤j} u_i − 1) / j > 0}` and
    `θ = (Σ_{i≤ρ} u_i − 1) / ρ`, the projection is `max(v − θ, 0)`. Jit-safe, no loop;
    finite for any finite `v` (entries far below the largest get 0).

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(x), 4) for x in project_onto_simplex(jnp.array([0.5, 0.9, -0.2]))]
      [0.3, 0.7, 0.0]
    """
    v = jnp.asarray(v, jnp.float32)
    # The projection commutes with adding a constant to every entry; starting from
    # max(v) = 0 keeps `u_1 − (u_1 − 1)` exact in float32 however large |v| is.
    v = v - jnp.max(v)
    u = jnp.sort(v)[::-1]
    cumulative = jnp.cumsum(u) - 1.0
    index = jnp.arange(1, v.shape[0] + 1, dtype=v.dtype)
    rho = jnp.sum(u - cumulative / index > 0)  # ≥ 1: the largest entry always qualifies
    theta = cumulative[rho - 1] / rho.astype(v.dtype)
    return jnp.maximum(v - theta, 0.0)
