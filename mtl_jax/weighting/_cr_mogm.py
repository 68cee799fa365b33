"""`cr_mogm`: correlation-reduced gradient manipulation (Zhou et al., NeurIPS 2022)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import param_blocks
from mtl_jax.weighting._base import GRAMIAN, Weighting


class CRMOGMState(NamedTuple):
    """The inner method's state `inner`, the smoothed weights `weights` of the previous
    step (`λ_{k−1}`, [T] or [B, T] like the inner method's; the uniform prior `1/T`
    before the first step) and the update counter `step` (0 before the first step)."""

    inner: Any
    weights: jax.Array
    step: jax.Array


def cr_mogm(
    *,
    inner: str | Weighting = "mgda",
    alpha: float = 0.5,
    start: str = "inner",
    inner_kwargs: Mapping[str, Any] | None = None,
) -> Weighting:
    """CR-MOGM, Zhou et al., "On the Convergence of Stochastic Multi-Objective Gradient
    Manipulation and Beyond", NeurIPS 2022: the correlation-reduced MOGM (CR-MOGM) update
    of the weights (its section and algorithm numbers are not cited here: not checked).

    A stochastic gradient-manipulation method computes its weights `λ̂_k` from the same
    mini-batch gradients that they then combine; the correlation between the two biases
    the update. CR-MOGM wraps any such method (the "inner" one) and uses an exponential
    moving average of its weights instead:

        λ_k = (1 − α) λ_{k−1} + α λ̂_k,        d_k = Σ_t λ_{k,t} g_t,

    where `λ̂_k` are the inner method's weights on step k's Gramian. `α = 1` is the inner
    method itself; smaller `α` averages the weights over about `1/α` steps, so that the
    weights combining this step's gradients depend on this batch only through the
    fraction `α`.

    Conventions that change numbers:
      * Initialisation (`start`): `"inner"` (default) takes `λ_0 = λ̂_0`, the inner
        method's weights on the first step; `"uniform"` smooths from a prior
        `λ_{−1} = 1/T` (torchjd's `CRMOGMWeighting`, which starts from `1/m`), so the
        first weights are `(1 − α)/T + α λ̂_0`. A zero prior is not offered: it would
        shrink the first updates.
      * torchjd writes the EMA the other way round, `λ_k = a λ_{k−1} + (1 − a) λ̂_k`:
        its `alpha` is `1 − alpha` here. Its constructor's default is `alpha=0.1` (0.9
        here) while its docstring speaks of 0.9 (`src/torchjd/aggregation/_cr_mogm.py`);
        pass the value you mean.
      * `α` is a constant (default 0.5, this library's choice).
      * The inner method runs every step with its own state, as it would alone; only its
        weights are smoothed (a cached-weights option such as `nash_mtl`'s
        `update_every` still applies inside). For a blocked inner method (`blocks`
        other than `"whole"`) the [B, T] weights are smoothed block by block.

    Args:
      inner: the wrapped method, gramian-kind: a name of `mtl_jax.weighting.METHODS` (or
        an import path `"package.module:factory"`), built with `inner_kwargs`, or a
        `Weighting` already built.
      alpha: EMA rate in (0, 1]; 1 reproduces the inner method.
      start: `"inner"` or `"uniform"`, the initialisation above.
      inner_kwargs: the inner method's options when `inner` is a name (checked by
        `mtl_jax.weighting.create`).

    Metrics: the inner method's own metrics under their own names (e.g. `mgda`'s
    `solver_iterations` and `solver_gap`), and `inner_weights`, the raw `λ̂_k`. The
    smoothed weights `λ_k` are what the trainer logs as `weights`.

    The step's `key` is handed unchanged to the inner method (which declares whether it
    draws; `cr_mogm` itself draws nothing).

    Raises:
      ValueError: `inner` is unknown, not gramian-kind, or a `Weighting` given together
        with `inner_kwargs`; `alpha` is not in (0, 1].

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import cr_mogm
      >>> w = cr_mogm(inner="mgda", alpha=0.5, inner_kwargs={"normalization": "none"})
      >>> state = w.init(("a", "b"))
      >>> gram = jnp.diag(jnp.array([1.0, 4.0]))
      >>> first, state, _ = w.update(None, state, key=None, gramian=gram)
      >>> [round(float(x), 4) for x in first]  # λ_0 = λ̂_0, MGDA's weights
      [0.8, 0.2]
      >>> second, state, m = w.update(None, state, key=None, gramian=jnp.eye(2))
      >>> [round(float(x), 4) for x in m["inner_weights"]]  # λ̂_1
      [0.5, 0.5]
      >>> [round(float(x), 4) for x in second]  # λ_1 = (λ_0 + λ̂_1) / 2
      [0.65, 0.35]
    """
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not 0.0 < float(alpha) <= 1.0
    ):
        raise ValueError(f"cr_mogm: alpha must be a number in (0, 1], got {alpha!r}")
    alpha = float(alpha)
    if start not in ("inner", "uniform"):
        raise ValueError(f"cr_mogm: start must be 'inner' or 'uniform', got {start!r}")
    method = _inner_method(inner, inner_kwargs)

    def init(task_names, row=None):
        inner_state = method.init_for(task_names, row)
        num_tasks = len(task_names)
        gram_shape = (num_tasks, num_tasks)
        if method.blocks != "whole":
            gram_shape = (param_blocks.count(row, method.blocks), *gram_shape)
        # The inner weights' shape ([T], or [T] / [B, T] for a blocked method) without
        # running the inner method: trace one update on stand-in inputs.
        key = jax.random.PRNGKey(0) if method.stochastic else None
        shape = jax.eval_shape(
            lambda s, g: method.update(jnp.ones((num_tasks,)), s, key=key, gramian=g)[0],
            inner_state,
            jax.ShapeDtypeStruct(gram_shape, jnp.float32),
        )
        return CRMOGMState(
            inner=inner_state,
            weights=jnp.full(shape.shape, 1.0 / num_tasks, shape.dtype),
            step=jnp.asarray(0, jnp.int32),
        )

    def update(losses, state, *, key, gramian=None, rows=None):
        del rows
        raw, inner_state, inner_metrics = method.update(
            losses, state.inner, key=key, gramian=gramian
        )
        smoothed = (1.0 - alpha) * state.weights + alpha * raw
        if start == "inner":
            smoothed = jnp.where(state.step == 0, raw, smoothed)
        weights = smoothed.astype(state.weights.dtype)
        metrics = {**inner_metrics, "inner_weights": raw}
        return weights, CRMOGMState(inner_state, weights, state.step + 1), metrics

    after_update = None
    if method.after_update is not None:

        def after_update(losses_before, losses_after, state):
            inner_state, metrics = method.after_update(losses_before, losses_after, state.inner)
            return state._replace(inner=inner_state), metrics

    return Weighting(
        init=init,
        update=update,
        kind=GRAMIAN,
        after_update=after_update,
        blocks=method.blocks,
        stochastic=method.stochastic,
    )


def _inner_method(inner: str | Weighting, inner_kwargs: Mapping[str, Any] | None) -> Weighting:
    """The wrapped `Weighting`, built from its name if need be, checked to be gramian-kind."""
    if isinstance(inner, Weighting):
        if inner_kwargs:
            raise ValueError(
                "cr_mogm: inner_kwargs are for an inner method given by name; "
                "the Weighting given as inner is already built"
            )
        method, what = inner, "the Weighting given"
    elif isinstance(inner, str):
        # The registry is the package that imports this module: import it when called.
        from mtl_jax import weighting

        if inner_kwargs is not None and not isinstance(inner_kwargs, Mapping):
            raise ValueError(
                f"cr_mogm: inner_kwargs must be a mapping of options, got {inner_kwargs!r}"
            )
        try:
            method = weighting.create(inner, **dict(inner_kwargs or {}))
        except ValueError as error:
            raise ValueError(f"cr_mogm: option inner={inner!r}: {error}") from error
        what = repr(inner)
    else:
        raise ValueError(
            f"cr_mogm: inner must be a method name or a Weighting, got {type(inner).__name__}"
        )
    if method.kind != GRAMIAN:
        raise ValueError(
            f"cr_mogm: option inner must be a gramian-kind method (weights computed from "
            f"the Gramian), but {what} is {method.kind}-kind"
        )
    return method
