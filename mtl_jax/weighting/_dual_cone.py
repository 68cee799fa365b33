"""Projection onto the dual cone of the task gradients, from their Gramian alone.

The dual cone of the rows `g_t` of `J` is `C = {x : J x ≥ 0}`: the directions that
conflict with no task. `upgrad` and `dualproj` project vectors `y = Jᵀu` (a weighted sum of
the rows) onto `C`. Quinton & Rey (2024), Prop. 1, show that the projection is again a
weighted sum of the rows, `π_C(Jᵀu) = Jᵀv`, with weights from the Gramian `G = J Jᵀ` only.

Derivation. The projection solves `min_x ½‖x − Jᵀu‖²` subject to `J x ≥ 0`. With
multipliers `μ ≥ 0` the Lagrangian `½‖x − Jᵀu‖² − μᵀJx` is minimised at
`x = Jᵀ(u + μ)`, and the dual problem is

    min_{μ ≥ 0}  ½ μᵀGμ + μᵀ(Gu).                                        (1)

Substituting `v = u + μ`, (1) equals `½ vᵀGv − ½ uᵀGu`, so the weights solve

    min_v ½ vᵀGv  subject to  v ≥ u,                                      (2)

which is the form torchjd hands to quadprog. At the solution the KKT conditions read
`μ ≥ 0`, `Gv ≥ 0` and `μ_t (Gv)_t = 0`; `Gv = J(Jᵀv)` is the vector of inner products of
every task gradient with the projection, so `Gv ≥ 0` *is* "no task conflicts with it".

Solver. (1) is a non-negative least-squares problem in Gramian form. We solve it with the
Lawson–Hanson active-set method (Lawson & Hanson 1974, Ch. 23; Bro & De Jong 1997 for the
Gramian form): a passive set `P` of free multipliers grows by the most violated dual
constraint, `μ_P` solves the unconstrained problem on `P`, and a step back to feasibility
releases a multiplier that would turn negative. It terminates after finitely many steps —
in our measurements fewer than 2T — and each iterate solves its subproblem exactly, so the
KKT residual reaches float32 round-off rather than an iterative method's tolerance. The
inverse of `G_PP` is kept up to date by rank-one (bordering / Schur) updates, O(T²) per
step, with one step of iterative refinement per solve and a few more at the end. When
nothing conflicts (`Gu ≥ 0`), `μ = 0` is optimal and no step runs at all. Everything is
`jit`-compiled (`lax.while_loop`), and projections sharing a Gramian are solved together
(`vmap`).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Schur complements below this (relative to the largest diagonal entry of G) count as
# singular: float32 round-off in computing them is of order 1e-7 · T. torchjd's ridge
# (`reg_eps = 1e-4` after trace normalisation) keeps them well above it.
_SINGULAR = 1e-6
# Iterative-refinement steps after the active-set loop.
_POLISH_STEPS = 3


# Preferences `p` of `upgrad` and `dualproj`: 1/T or 1.
REDUCTIONS = ("mean", "sum")


def check_dual_cone_options(
    name: str, *, reduction: str, norm_eps: float, reg_eps: float, tol: float, max_iters: int
) -> None:
    """Validates the options shared by `upgrad` and `dualproj`, naming the bad one."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    if not norm_eps >= 0:
        raise ValueError(f"{name}: norm_eps must be >= 0, got {norm_eps!r}")
    if not reg_eps > 0:
        raise ValueError(
            f"{name}: reg_eps must be > 0 (the projection needs a positive-definite Gramian), "
            f"got {reg_eps!r}"
        )
    if not tol > 0:
        raise ValueError(f"{name}: tol must be > 0, got {tol!r}")
    if max_iters < 1:
        raise ValueError(f"{name}: max_iters must be >= 1, got {max_iters!r}")


def check_numbers(name: str, option: str, value) -> tuple[float, ...]:
    """Validates a per-task option given as a non-empty sequence of finite numbers (not
    bools) and returns it as a tuple of floats."""
    values = np.asarray(value, dtype=object)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name}: {option} must be a non-empty sequence of numbers, got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, int | float | np.number) for v in values):
        raise ValueError(f"{name}: {option} must hold numbers, got {value!r}")
    floats = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in floats):
        raise ValueError(f"{name}: {option} must be finite, got {value!r}")
    return floats


def check_pref_vector(name: str, pref_vector) -> tuple[float, ...] | None:
    """Validates a preference vector option (a sequence of T numbers, non-negative, finite,
    not all zero) and returns it as a tuple of floats; `None` stays `None`."""
    if pref_vector is None:
        return None
    floats = check_numbers(name, "pref_vector", pref_vector)
    if not all(v >= 0 for v in floats) or not any(floats):
        raise ValueError(
            f"{name}: pref_vector must be finite and non-negative with a positive entry, "
            f"got {pref_vector!r}"
        )
    return floats


def preference_vector(
    reduction: str, pref_vector: tuple[float, ...] | None, num_tasks: int
) -> jax.Array:
    """The [T] preference `p` of `upgrad`, `dualproj`, `aligned_mtl` and `config`:
    `pref_vector` as given (validated by `check_pref_vector`, not normalised, as torchjd's
    `pref_vector_to_weighting` hands it to a `ConstantWeighting`), else `reduction`'s `1/T`
    (`"mean"`) or `1` (`"sum"`) for every task."""
    if pref_vector is not None:
        return jnp.asarray(pref_vector, jnp.float32)
    return jnp.full((num_tasks,), 1.0 / num_tasks if reduction == "mean" else 1.0, jnp.float32)


def check_num_tasks(name: str, option: str, values: tuple | None, num_tasks: int) -> None:
    """Raises when a per-task option does not have one entry per task."""
    if values is not None and len(values) != num_tasks:
        raise ValueError(
            f"{name}: {option} has {len(values)} entries but there are {num_tasks} tasks"
        )


class DualConeResult(NamedTuple):
    """Projection weights and solver diagnostics.

    Attributes:
      weights: `v`, shaped like `u` ([T] or [K, T]): `Jᵀv` is the projection of `Jᵀu`.
      iterations: int32, the most active-set steps any of the K projections used.
      residual: the largest natural KKT residual `‖min(μ, Ĝv)‖_∞ / ‖u‖_∞` over the K
        projections, with `μ = v − u` and `Ĝ` the Gramian divided by its largest diagonal
        entry; zero exactly at the solution of (2).
    """

    weights: jax.Array
    iterations: jax.Array
    residual: jax.Array


def normalize_and_regularize(gram: jax.Array, *, norm_eps: float, reg_eps: float) -> jax.Array:
    """torchjd's conditioning of the Gramian before a dual-cone projection.

    `G / trace(G) + reg_eps · I`, where the division (Frobenius normalisation of `J`) makes the
    problem independent of the gradients' scale, and the ridge makes it strictly convex
    despite round-off and rank deficiency. The ridge moves the solution: the returned
    projection satisfies `(G/trace(G) + reg_eps·I) v ≥ 0`, so each `g_t · d` may be as low as
    `−reg_eps · trace(G) · v_t`. When `trace(G) ≤ norm_eps` (an absolute threshold, as in
    torchjd, which tests `trace(G) < norm_eps`) the gradients are treated as zero, the
    normalised Gramian is 0 and the projection returns `v = u` (the unprojected
    preference); pass `norm_eps=0` for exact scale invariance.

    Args:
      gram: [T, T] Gramian.
      norm_eps: trace below which the Gramian is treated as zero (torchjd: 1e-4).
      reg_eps: ridge added after normalisation (torchjd: 1e-4).
    """
    gram = gram.astype(jnp.float32)
    trace = jnp.trace(gram)
    usable = (trace > norm_eps) & (trace > 0)
    normalized = jnp.where(usable, gram / jnp.where(usable, trace, 1.0), 0.0)
    return normalized + reg_eps * jnp.eye(gram.shape[0], dtype=jnp.float32)


def _masked_matvec(gram, z, passive):
    """`M z` for the masked matrix `M` that is `G` on `P × P` and the identity elsewhere."""
    return jnp.where(passive, gram @ jnp.where(passive, z, 0.0), z)


def _add_to_inverse(inverse, gram, passive, j):
    """Inverse of the masked matrix after index `j` joins `P` (block bordering, O(T²)).

    With `h = (G_PP)⁻¹ G_Pj` and the Schur complement `s = G_jj − G_jP h > 0`, the new
    inverse is the old one with its identity entry at `j` removed, plus `e eᵀ / s` where `e`
    is `h` on `P` and −1 at `j`.
    """
    column = jnp.where(passive, gram[:, j], 0.0)
    h = inverse @ column
    schur = gram[j, j] - column @ h
    e = h - jax.nn.one_hot(j, gram.shape[0], dtype=gram.dtype)
    unit = jnp.zeros_like(inverse).at[j, j].set(1.0)
    return inverse - unit + jnp.outer(e, e) / schur, schur


def _remove_from_inverse(inverse, k):
    """Inverse of the masked matrix after index `k` leaves `P` (Schur downdate, O(T²))."""
    column = inverse[:, k]
    unit = jnp.zeros_like(inverse).at[k, k].set(1.0)
    return inverse - jnp.outer(column, column) / column[k] + unit


def _lawson_hanson(gram, u, tol, max_iters):
    """Solves (1) for one `u` with the Gramian-form Lawson–Hanson method.

    The inverse of the masked matrix (`G_PP` on the passive set, identity elsewhere) is kept
    up to date with rank-one bordering updates, so an iteration costs O(T²) instead of a
    fresh O(T³) factorisation; one step of iterative refinement per solve removes the
    round-off those updates accumulate. Returns `(μ, iterations, residual)`; see
    `DualConeResult` for the residual.
    """
    num_tasks = gram.shape[0]
    b = gram @ u
    unit = jnp.max(jnp.abs(u))
    unit = jnp.where(unit > 0, unit, 1.0)
    threshold = tol * unit
    indices = jnp.arange(num_tasks)

    def gradient(mu):
        return gram @ mu + b

    def cond(carry):
        mu, passive, _, pending, stalled, i = carry
        violated = jnp.any(~passive & (gradient(mu) < -threshold))
        return (i < max_iters) & ~stalled & (pending | violated)

    def body(carry):
        mu, passive, inverse, pending, _, i = carry
        # Outer step: free the multiplier whose dual constraint is most violated.
        entering = jnp.argmin(jnp.where(passive, jnp.inf, gradient(mu)))
        grown, schur = _add_to_inverse(inverse, gram, passive, entering)
        trial = jnp.where(pending, passive, passive | (indices == entering))
        trial_inverse = jnp.where(pending, inverse, grown)
        rhs = jnp.where(trial, -b, 0.0)
        z = trial_inverse @ rhs
        z = z + trial_inverse @ (rhs - _masked_matvec(gram, z, trial))
        z = jnp.where(trial, z, 0.0)
        # In exact arithmetic the entering multiplier is positive and, for a positive-definite
        # G, so is the Schur complement; if round-off says otherwise, the current point is
        # optimal to working precision (or G is singular there) and we stop instead of
        # cycling.
        singular = schur <= _SINGULAR
        stalled = ~jnp.all(jnp.isfinite(z)) | (~pending & ((z[entering] <= 0) | singular))
        feasible = jnp.all(jnp.where(trial, z > 0, True))
        # Inner step: move towards z until the first passive multiplier reaches zero, and
        # release it.
        blocking = trial & (z <= 0)
        ratios = jnp.where(blocking, mu / jnp.where(blocking, mu - z, 1.0), jnp.inf)
        leaving = jnp.argmin(ratios)
        alpha = jnp.where(feasible, 1.0, jnp.clip(ratios[leaving], 0.0, 1.0))
        new_mu = jnp.maximum(mu + alpha * (z - mu), 0.0)
        new_passive = trial & ~(~feasible & (indices == leaving))
        new_inverse = jnp.where(
            feasible, trial_inverse, _remove_from_inverse(trial_inverse, leaving)
        )
        new_mu = jnp.where(new_passive, new_mu, 0.0)
        return (
            jnp.where(stalled, mu, new_mu),
            jnp.where(stalled, passive, new_passive),
            jnp.where(stalled, inverse, new_inverse),
            ~feasible & ~stalled,
            stalled,
            i + 1,
        )

    init = (
        jnp.zeros(num_tasks, jnp.float32),
        jnp.zeros(num_tasks, bool),
        jnp.eye(num_tasks, dtype=jnp.float32),
        jnp.asarray(False),
        jnp.asarray(False),
        jnp.asarray(0, jnp.int32),
    )
    mu, passive, inverse, _, _, iterations = jax.lax.while_loop(cond, body, init)
    # Polish: refinement steps on the final passive set remove what the rank-one updates
    # drifted; the result is the exact minimiser when `P` is the optimal support.
    rhs = jnp.where(passive, -b, 0.0)
    polished = mu
    for _ in range(_POLISH_STEPS):
        polished = polished + inverse @ (rhs - _masked_matvec(gram, polished, passive))
    polished = jnp.where(passive, jnp.maximum(polished, 0.0), 0.0)
    mu = jnp.where(jnp.all(jnp.isfinite(polished)), polished, mu)
    residual = jnp.max(jnp.abs(jnp.minimum(mu, gradient(mu)))) / unit
    return mu, iterations, residual


# Jitted so that eager callers (e.g. `aggregate` outside `jit`) compile it once per shape.
@functools.partial(jax.jit, static_argnames=("tol", "max_iters"))
def project_onto_dual_cone(
    gram: jax.Array, u: jax.Array, *, tol: float = 1e-7, max_iters: int = 200
) -> DualConeResult:
    """Weights `v` of the projection of `Jᵀu` onto `{x : Jx ≥ 0}`: problem (2) above.

    Args:
      gram: [T, T] positive-definite Gramian (e.g. from `normalize_and_regularize`). On a
        singular one the result is still finite, but the solver stops where a Schur
        complement vanishes (see `residual`) and the weights of a degenerate face are not
        unique.
      u: [T] or [K, T]: the weights of the vector(s) to project; K projections share the
        Gramian and are solved together (`vmap`).
      tol: a dual constraint counts as violated below `−tol · ‖u‖_∞`, in units of the
        Gramian divided by its largest diagonal entry. The default sits at float32
        round-off; a constraint that round-off cannot resolve stops the solver instead of
        making it cycle. With torchjd's ridge (1e-4) the weights then agree with an exact
        float64 solution to about 1e-3 relative, the float32 limit at that conditioning.
      max_iters: cap on iterations per projection (each O(T²); typically fewer than 2T).

    Returns:
      `DualConeResult` with `weights` shaped like `u`; always finite for finite input.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import project_onto_dual_cone
      >>> gram = jnp.array([[1.0, -0.5], [-0.5, 1.0]])
      >>> result = project_onto_dual_cone(gram, jnp.array([1.0, 0.0]))
      >>> [round(x, 4) for x in result.weights.tolist()]
      [1.0, 0.5]
    """
    gram = gram.astype(jnp.float32)
    u = jnp.asarray(u, jnp.float32)
    # The solution of (2) does not change when G is scaled; a unit diagonal keeps the
    # tolerance meaningful whatever the gradients' magnitude.
    scale = jnp.max(jnp.diagonal(gram))
    gram = jnp.where(scale > 0, gram / jnp.where(scale > 0, scale, 1.0), 0.0)
    batched = u.reshape(-1, u.shape[-1])
    mu, iterations, residual = jax.vmap(lambda row: _lawson_hanson(gram, row, tol, max_iters))(
        batched
    )
    return DualConeResult(
        weights=(batched + mu).reshape(u.shape),
        iterations=jnp.max(iterations),
        residual=jnp.max(residual),
    )
