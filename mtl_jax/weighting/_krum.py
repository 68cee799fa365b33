"""`krum`: Byzantine-robust selection of a task gradient (Blanchard et al., NeurIPS 2017)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from mtl_jax.weighting._base import GRAMIAN, Weighting

DISTANCES = ("squared", "euclidean")


class KrumState(NamedTuple):
    """`krum` keeps no state."""


def krum(*, n_byzantine: int = 0, n_selected: int = 1, distance: str = "squared") -> Weighting:
    """Krum, Blanchard et al., NeurIPS 2017, Sec. 4: the most central task gradient.

    From "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent";
    `n_selected > 1` is the paper's Multi-Krum (Sec. 5).

    Each task gradient `g_i` is scored by the sum of its distances to its `T − f − 2`
    nearest other gradients (`f = n_byzantine`), and the update is the gradient with the
    smallest score — or the mean of the `n_selected` best (Multi-Krum): weights are
    `1/n_selected` on the selected tasks and 0 elsewhere. Distances come from the Gramian,
    `‖g_i − g_j‖² = G_ii + G_jj − 2 G_ij`. A gradient far from all the others (much larger,
    or pointing away) has a large score and is not selected.

    Conventions that change numbers: the paper scores with squared distances (the
    default); torchjd's Krum sums plain Euclidean distances (`distance="euclidean"`).
    torchjd has no default for `n_byzantine`; 0 here (score against the `T − 2` nearest),
    so that the method runs with 3 tasks. Ties (e.g. identical gradients) go to the
    lowest task index. G is divided by its largest diagonal entry first (the choice is scale
    invariant); distances between nearly identical gradients lose relative precision in
    float32, as any Gramian-based distance does.

    Args:
      n_byzantine: `f`, the number of gradients that may be adversarial; needs
        `T ≥ f + 3` (checked when `update` is traced).
      n_selected: how many lowest-score gradients to average (Multi-Krum; 1 is Krum).
      distance: `"squared"` (paper) or `"euclidean"` (torchjd).

    Metrics: `scores` [T], each task's Krum score in units of the largest squared gradient
    norm (`"squared"`) or of the largest gradient norm (`"euclidean"`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.weighting import aggregate, krum
      >>> J = jnp.array([[1.0, 0.0], [1.1, 0.1], [0.9, -0.1], [-50.0, 40.0]])
      >>> _, weights, _ = aggregate(krum(), J)
      >>> weights.tolist()  # the most central row; the outlier is never picked
      [1.0, 0.0, 0.0, 0.0]
    """
    if not isinstance(n_byzantine, int) or n_byzantine < 0:
        raise ValueError(f"krum: n_byzantine must be an integer >= 0, got {n_byzantine!r}")
    if not isinstance(n_selected, int) or n_selected < 1:
        raise ValueError(f"krum: n_selected must be an integer >= 1, got {n_selected!r}")
    if distance not in DISTANCES:
        raise ValueError(f"krum: distance must be one of {list(DISTANCES)}, got {distance!r}")

    def init(task_names):
        del task_names
        return KrumState()

    def update(losses, state, *, key, gramian=None, rows=None):
        del losses, key, rows
        num_tasks = gramian.shape[0]
        if num_tasks < n_byzantine + 3:
            raise ValueError(
                f"krum: needs at least n_byzantine + 3 = {n_byzantine + 3} tasks, got {num_tasks}"
            )
        if num_tasks < n_selected:
            raise ValueError(f"krum: n_selected={n_selected} exceeds the {num_tasks} tasks")
        gram = gramian.astype(jnp.float32)
        scale = jnp.max(jnp.diagonal(gram))
        gram = jnp.where(scale > 0, gram / jnp.where(scale > 0, scale, 1.0), 0.0)
        squared_norms = jnp.diagonal(gram)
        squared = jnp.maximum(squared_norms[:, None] + squared_norms[None, :] - 2.0 * gram, 0.0)
        distances = squared if distance == "squared" else jnp.sqrt(squared)
        # A gradient is not its own neighbour, whatever round-off says about G_ii.
        distances = jnp.where(jnp.eye(num_tasks, dtype=bool), jnp.inf, distances)
        nearest = jnp.sort(distances, axis=1)[:, : num_tasks - n_byzantine - 2]
        scores = jnp.sum(nearest, axis=1)
        selected = jnp.argsort(scores, stable=True)[:n_selected]
        weights = jnp.zeros(num_tasks, jnp.float32).at[selected].set(1.0 / n_selected)
        return weights, state, {"scores": scores}

    return Weighting(init=init, update=update, kind=GRAMIAN)
