"""`graddrop`: gradient sign dropout (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.row_math import reduce_tasks
from mtl_jax.weighting._base import JACOBIAN, Weighting


class GradDropState(NamedTuple):
    """Empty: the mask's uniforms come from the step key."""


def graddrop(*, leak: float | Sequence[float] | Mapping[str, float] = 0.0) -> Weighting:
    """GradDrop, Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with
    Gradient Sign Dropout", NeurIPS 2020, Alg. 1 (lines 10–15).

    For every coordinate `j` of the rows, the positive sign purity is
    `P_j = ½ (1 + Σ_t g_tj / Σ_t |g_tj|)` (Eq. 1; `P_j = ½` where every row is zero). One
    uniform `U_j ~ U[0, 1)` per coordinate, shared by the tasks, keeps the positive
    entries when `P_j > U_j` and the negative ones otherwise:
    `M_tj = [P_j > U_j] [g_tj > 0] + [P_j ≤ U_j] [g_tj < 0]`, and the direction is
    `d_j = Σ_t (ℓ_t + (1 − ℓ_t) M_tj) g_tj` with the leak `ℓ_t` of task t. A coordinate
    whose entries all have the same sign has `P_j ∈ {0, 1}` and is kept in full, and
    `E[d] = Σ_t g_t`: the mask only decides *which* sign each coordinate follows (the `≤`
    tie-break on `P_j = U_j` is ours; the paper leaves ties open, LibMTL and torchjd keep
    neither sign).

    LibMTL applies GradDrop only to representation gradients (`rep_grad=True`; parameter
    mode raises). It multiplies each task's representation gradient by the sign of the
    activation and sums over the batch, computes `P`, `U` and the mask per feature from
    those sums, and applies that one mask to every example. That needs the activations
    and is not done here: in `rep_grad` mode the mask acts on each (example, feature)
    entry separately, as torchjd's `GradDrop` acts on each entry of its matrix. In
    parameter mode (`rep_grad=False`) it acts on the coordinates of the shared parameters.

    The uniforms are drawn from the step key that `update` receives (derived from the
    run's seed and the step). One draw covers the concatenation of the leaves in tree order, so
    a pytree of rows gives the same direction as the flattened `[T, P]` matrix.

    Args:
      leak: `ℓ_t ∈ [0, 1]`, the fraction of task t's gradient that passes the mask
        unmasked: one number for every task (LibMTL's `GradDrop` `leak`, a single float,
        default 0: `per_grads * (leak + (1 - leak) * M)` in its `backward`), a sequence with
        one per task in sorted-name order, as torchjd's `GradDrop(leak=...)` (a 1-D tensor,
        one entry per row: `(leak[i] + (1 - leak[i]) * M_i) * matrix[i]` in its `forward`,
        the per-task leak parameters of the paper's Alg. 1), or a mapping task name ->
        leak naming exactly the tasks (checked by `init`). `ℓ = 0` (the default) is the
        plain mask; `ℓ_t = 1` passes task t in full; all ones give `Σ_t g_t`.

    Metrics: `kept_fraction` [T], the fraction of each task's nonzero coordinates that
    the mask keeps (1 for a zero row).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, graddrop
      >>> J = jnp.array([[1.0, -2.0], [3.0, 1.0]])
      >>> direction, _, state = aggregate(graddrop(), J, key=jax.random.PRNGKey(0))
      >>> float(direction[0])  # both tasks push coordinate 0 the same way: kept in full
      4.0
    """

    def valid(value):
        return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1

    if isinstance(leak, Mapping):
        if not leak or not all(isinstance(k, str) and valid(v) for k, v in leak.items()):
            raise ValueError(
                f"graddrop: leak must be a number in [0, 1] or a non-empty mapping task name "
                f"-> number in [0, 1], got {leak!r}"
            )
        # Vectors are in sorted-name order, and `init` checks that the names are the tasks.
        leaks = tuple(float(leak[name]) for name in sorted(leak))
    elif isinstance(leak, Sequence) and not isinstance(leak, str):
        if not leak or not all(valid(v) for v in leak):
            raise ValueError(
                f"graddrop: leak must be a number in [0, 1] or a non-empty sequence of them, "
                f"got {leak!r}"
            )
        leaks = tuple(float(v) for v in leak)
    elif valid(leak):
        leaks = None
    else:
        raise ValueError(
            f"graddrop: leak must be a number in [0, 1] or a sequence of them, got {leak!r}"
        )

    def check_tasks(num_tasks):
        if leaks is not None and len(leaks) != num_tasks:
            raise ValueError(
                f"graddrop: leak has {len(leaks)} entries but there are {num_tasks} tasks"
            )

    def init(task_names, row):
        del row
        if isinstance(leak, Mapping) and set(leak) != set(task_names):
            raise ValueError(
                f"graddrop: leak is given for tasks {sorted(leak)} but the tasks are "
                f"{sorted(task_names)}"
            )
        check_tasks(len(task_names))
        return GradDropState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, gramian
        leaves, treedef = jax.tree.flatten(rows)
        sizes = [math.prod(leaf.shape[1:]) for leaf in leaves]
        uniforms = jax.random.uniform(key, (sum(sizes),), jnp.float32)
        offset = 0
        directions, kept, nonzero = [], 0.0, 0.0
        for leaf, size in zip(leaves, sizes, strict=True):
            u = uniforms[offset : offset + size].reshape(leaf.shape[1:])
            offset += size
            grads = leaf.astype(jnp.float32)
            if leaks is None:
                task_leak = leak
            else:
                check_tasks(grads.shape[0])
                task_leak = jnp.asarray(leaks, jnp.float32).reshape((-1,) + (1,) * (grads.ndim - 1))
            total = reduce_tasks(jnp.add, grads)
            magnitude = reduce_tasks(jnp.add, jnp.abs(grads))
            # Same-sign coordinates give total = ±magnitude bit for bit, so P is exactly
            # 0 or 1 there and U ∈ [0, 1) always keeps them.
            ratio = jnp.where(magnitude > 0, total / jnp.where(magnitude > 0, magnitude, 1.0), 0.0)
            purity = 0.5 * (1.0 + ratio)
            mask = jnp.where(grads > 0, purity > u, purity <= u)
            scale = task_leak + (1.0 - task_leak) * mask.astype(jnp.float32)
            directions.append(reduce_tasks(jnp.add, scale * grads).astype(leaf.dtype))
            present = grads != 0
            axes = tuple(range(1, grads.ndim))
            kept = kept + jnp.sum(present & mask, axis=axes)
            nonzero = nonzero + jnp.sum(present, axis=axes)
        kept_fraction = jnp.where(nonzero > 0, kept / jnp.maximum(nonzero, 1), 1.0)
        direction = jax.tree.unflatten(treedef, directions)
        return direction, state, {"kept_fraction": kept_fraction}

    return Weighting(init=init, update=update, kind=JACOBIAN, stochastic=True)
