"""Shared Gramian math: cosine normalisation and the α-fair equation `(Gw)_t = w_t^{-p}`.

Nash-MTL (Navon et al., ICML 2022) solves `Gα = 1/α` elementwise and FairGrad (Ban & Ji,
ICML 2024) solves `(Gw)_t = w_t^{-1/α}`; both are `(Gw)_t = w_t^{-p}` with `p > 0`
(`p = 1` for Nash-MTL). For a PSD `G` this equation is the stationarity condition of the
strictly convex

    f(w) = ½ wᵀGw − Σ_t h_p(w_t),   h_p(w) = log w (p = 1),  w^{1−p} / (1 − p) (p ≠ 1),

so its solution, when it exists, is the unique minimiser of `f` over `w > 0`. We find it
by damped Newton's method (Boyd & Vandenberghe, Convex Optimization, §9.5): the Hessian
`G + diag(p w^{-p-1})` is positive definite for every `w > 0`, the Newton direction is a
descent direction of `f`, and a backtracking (Armijo) line search with a
fraction-to-the-boundary rule keeps `w > 0` and decreases `f` monotonically, which makes
the iteration globally convergent with a quadratic final phase. For `p = 1`, `f` is
self-concordant and this is the textbook guarantee; it reaches the float32 floor in about
5–10 iterations on random Gramians.

Scale. Newton's method is invariant to a diagonal change of variables, but float32 is
not: gradient norms 1e-10…1e10 give Gramian entries 1e-20…1e20. We therefore solve in
the cosine variables `β_t = ‖ĝ_t‖ w̃_t` (see `fair_weights`), where the matrix is the
cosine matrix with unit diagonal; for `p = 1` that problem is exactly scale-free.

Existence. When some non-negative combination of the task gradients is zero (a
Pareto-stationary point, e.g. two opposite gradients), `f` has no minimiser: the
solution "lies at infinity", and the large weights an unregularised solver returns there
make `Σ w g` a cancellation of float32 rounding errors (we measured `‖d‖` in the
thousands). We therefore add a ridge `ε I` (`RIDGE`, relative to the unit diagonal of
the cosine matrix) to the matrix in `f`, which makes the minimiser exist, keep
`β ≤ (1/ε)^{1/(1+p)}` for `p = 1`, and sends `d → 0` at Pareto-stationary points (all
`u_t·d = 1/β_t − εβ_t → 0`): the method stops, as it should, where no direction improves
every task. The solve stops on the residual of the regularised equation; the reported
residual is that of the original one, which differs by `ε β_t^{1+p} / c_t` (below 1e-4
unless the gradients are within about 1e-4 of Pareto stationarity, where it correctly
reports that the equation has no solution).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Ridge added to the unit-diagonal cosine matrix (see the module docstring).
RIDGE = 1e-6
# Last-resort upper bound of the cosine-space iterates.
BETA_MAX = 1e6
# Step sizes tried in parallel by the backtracking line search: t_max · 2^{-k}.
_NUM_STEPS = 12
# Sufficient-decrease constant of the Armijo rule.
_ARMIJO = 1e-4
_EPS = float(jnp.finfo(jnp.float32).eps)
_TINY = float(jnp.finfo(jnp.float32).tiny)


class CosineGramian(NamedTuple):
    """`cosines` [T, T] with unit diagonal, gradient `norms` [T] and the `active` mask [T].

    A task whose gradient is zero (squared norm below the smallest normal float32) is
    inactive: its row and column of `cosines` are zero apart from the unit diagonal, so
    the solvers below decouple it.
    """

    cosines: jax.Array
    norms: jax.Array
    active: jax.Array


class FairResult(NamedTuple):
    """Solution `weights` [T] of `(Gw)_t = w_t^{-p}`, Newton `iterations` and `residual`.

    `residual = max_t |(Gw)_t w_t^p − 1|` over the tasks with a non-zero gradient: the
    relative violation of the equation (for `p = 1`, `‖α ⊙ Gα − 1‖_∞`). `beta` [T] is the
    cosine-space solution (see `fair_weights`).
    """

    weights: jax.Array
    iterations: jax.Array
    residual: jax.Array
    beta: jax.Array


def cosine_gramian(gram: jax.Array) -> CosineGramian:
    """Splits a Gramian `G = N Ĝ N` into gradient norms `N` and cosines `Ĝ`.

    Args:
      gram: [T, T] symmetric positive semi-definite Gramian.

    Returns:
      `CosineGramian`; every entry is finite for any finite PSD input (the cosines are
      clipped to [−1, 1] against rounding).
    """
    gram = gram.astype(jnp.float32)
    num_tasks = gram.shape[0]
    diagonal = jnp.diagonal(gram)
    active = diagonal > _TINY
    norms = jnp.where(active, jnp.sqrt(jnp.where(active, diagonal, 1.0)), 0.0)
    safe = jnp.where(active, norms, 1.0)
    # Divide twice rather than by n_i n_j, which can overflow for 1e20-scale rows.
    cosines = jnp.clip(gram / safe[:, None] / safe[None, :], -1.0, 1.0)
    cosines = jnp.where(active[:, None] & active[None, :], cosines, 0.0)
    eye = jnp.eye(num_tasks, dtype=bool)
    return CosineGramian(jnp.where(eye, 1.0, cosines), norms, active)


def combination_sq_norm(weights: jax.Array, cos: CosineGramian) -> jax.Array:
    """`‖Σ_t w_t g_t‖² = wᵀGw`, computed as `(N w)ᵀ Ĝ (N w)` so huge or tiny scales are safe."""
    scaled = jnp.where(cos.active, weights * cos.norms, 0.0)
    return jnp.maximum(scaled @ (cos.cosines @ scaled), 0.0)


def _h(beta: jax.Array, power: float) -> jax.Array:
    if power == 1.0:
        return jnp.log(beta)
    return beta ** (1.0 - power) / (1.0 - power)


def _max_active(values: jax.Array, active: jax.Array) -> jax.Array:
    return jnp.max(jnp.where(active, jnp.abs(values), 0.0), initial=0.0)


def solve_power_equation(
    cosines: jax.Array,
    coeff: jax.Array,
    power: float,
    active: jax.Array,
    *,
    tol: float,
    max_iters: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Damped Newton for `β > 0` with `((Ĝ + εI)β)_t = c_t β_t^{-p}` (module docstring).

    Args:
      cosines: [T, T] PSD matrix `Ĝ` with unit diagonal (inactive rows decoupled).
      coeff: [T] positive coefficients `c`.
      power: `p > 0`, a Python float (it selects `h_p` at trace time).
      active: [T] mask; inactive coordinates are fixed at their decoupled solution 1
        (`coeff` must be 1 there) and excluded from the residual.
      tol: stop when `max_t |((Ĝ + εI)β)_t β_t^p / c_t − 1| ≤ tol` over the active tasks.
      max_iters: cap on Newton steps.

    Returns:
      `(beta, iterations, residual)`, the residual being that of the unregularised
      equation `(Ĝβ)_t = c_t β_t^{-p}`.
    """
    num_tasks = cosines.shape[0]
    p = float(power)
    matrix = cosines + RIDGE * jnp.diag(active.astype(cosines.dtype))

    def objective(beta):  # [..., T] -> [...]
        quad = 0.5 * jnp.einsum("...t,ts,...s->...", beta, matrix, beta)
        return quad - jnp.sum(coeff * _h(beta, p), axis=-1)

    def residual(beta, gram=matrix):
        return _max_active((gram @ beta) * beta**p / coeff - 1.0, active)

    # Start from the solution of the diagonal problem, β_t = c_t^{1/(1+p)}, rescaled by
    # the exact minimiser of f along its ray (closed form: k^{1+p} = Σ c b^{1−p} / bᵀĜb).
    ray = jnp.where(active, coeff ** (1.0 / (1.0 + p)), 1.0)
    curvature = jnp.where(active, ray, 0.0) @ (matrix @ jnp.where(active, ray, 0.0))
    pull = jnp.sum(jnp.where(active, coeff * ray ** (1.0 - p), 0.0))
    k = (pull / jnp.maximum(curvature, _TINY)) ** (1.0 / (1.0 + p))
    beta0 = jnp.where(active, jnp.clip(k * ray, _TINY, BETA_MAX), 1.0)
    step_sizes = 0.5 ** jnp.arange(_NUM_STEPS, dtype=jnp.float32)

    def cond(carry):
        beta, i, moved = carry
        return (i < max_iters) & moved & (residual(beta) > tol)

    def body(carry):
        beta, i, _ = carry
        grad = matrix @ beta - coeff * beta ** (-p)
        hess = matrix + jnp.diag(p * coeff * beta ** (-p - 1.0))
        # Jacobi scaling before the solve: the diagonal can span many decades.
        jacobi = jax.lax.rsqrt(jnp.diagonal(hess))
        scaled = hess * jacobi[:, None] * jacobi[None, :]
        direction = -jacobi * jnp.linalg.solve(scaled, jacobi * grad)
        direction = jnp.where(active & jnp.isfinite(direction), direction, 0.0)
        # Fraction to the boundary: never step to β_t ≤ 0.
        ratio = jnp.where(direction < 0, -beta / jnp.where(direction < 0, direction, -1.0), 1.0)
        t_max = jnp.minimum(1.0, 0.99 * jnp.min(ratio))
        steps = t_max * step_sizes
        candidates = jnp.minimum(beta[None, :] + steps[:, None] * direction[None, :], BETA_MAX)
        values = objective(candidates)
        value = objective(beta)
        # The rounding slack lets the full Newton step through once f is flat to float32.
        magnitude = 0.5 * jnp.abs(beta) @ (jnp.abs(matrix) @ jnp.abs(beta))
        slack = 8.0 * _EPS * (magnitude + jnp.sum(jnp.abs(coeff * _h(beta, p))))
        accept = jnp.isfinite(values) & (
            values <= value + _ARMIJO * steps * (grad @ direction) + slack
        )
        first = jnp.argmax(accept)
        moved = jnp.any(accept) & jnp.any(direction != 0)
        new_beta = jnp.where(moved, candidates[first], beta)
        return new_beta, i + 1, moved

    beta, iterations, _ = jax.lax.while_loop(
        cond, body, (beta0, jnp.asarray(0, jnp.int32), jnp.asarray(num_tasks > 0))
    )
    return beta, iterations, residual(beta, cosines)


def fair_weights(gram: jax.Array, power: float, *, tol: float, max_iters: int) -> FairResult:
    """Solves `(Gw)_t = w_t^{-p}` for `w > 0` from the Gramian alone.

    Reduction to cosine space: with `s = max_t G_tt`, `ñ_t = ‖g_t‖ / √s` and
    `w = s^{-1/(1+p)} β / ñ`, the equation becomes `(Ĝβ)_t = ñ_t^{p−1} β_t^{-p}` with the
    cosine matrix `Ĝ` (for `p = 1`, `Ĝβ = 1/β` and `w = β / ‖g‖`).

    Args:
      gram: [T, T] PSD Gramian.
      power: `p > 0`.
      tol: relative residual tolerance (see `FairResult`).
      max_iters: Newton iteration cap.

    Returns:
      `FairResult`. A task with a zero gradient has no finite solution
      (`(Gw)_t = 0 ≠ w_t^{-p}`) and no effect on `Σ w g`: it gets weight 0 and is left out
      of the residual. Every output is finite.
    """
    cos = cosine_gramian(gram)
    p = float(power)
    scale = jnp.max(jnp.where(cos.active, cos.norms, 0.0), initial=0.0)
    safe_scale = jnp.where(scale > 0, scale, 1.0)
    relative = jnp.where(cos.active, cos.norms / safe_scale, 1.0)  # ñ, in (0, 1]
    coeff = jnp.where(cos.active, relative ** (p - 1.0), 1.0)
    beta, iterations, residual = solve_power_equation(
        cos.cosines, coeff, p, cos.active, tol=tol, max_iters=max_iters
    )
    # w = s^{-1/(1+p)} β / ñ with s = scale², in logs to stay inside float32.
    log_factor = -2.0 * jnp.log(safe_scale) / (1.0 + p)
    weights = jnp.where(cos.active, beta / relative * jnp.exp(log_factor), 0.0)
    return FairResult(weights, iterations, residual, beta)


def fair_residual(weights: jax.Array, gram: jax.Array, power: float) -> jax.Array:
    """`max_t |(Gw)_t w_t^p − 1|` over tasks with a non-zero gradient, for any `w ≥ 0`."""
    cos = cosine_gramian(gram)
    # (Gw)_t w_t^p = (n_t w_t) (Ĝ N w)_t w_t^{p−1}: products of O(1) cosine-space terms.
    scaled = jnp.where(cos.active, weights * cos.norms, 0.0)
    positive = cos.active & (weights > 0)
    power_term = jnp.where(positive, weights, 1.0) ** (float(power) - 1.0)
    value = jnp.where(positive, scaled * (cos.cosines @ scaled) * power_term, 0.0)
    return _max_active(value - 1.0, cos.active)
