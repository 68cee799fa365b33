"""A task written outside mtl_jax (the guide "Your own task"): vector regression."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from mtl_jax.tasks import LOWER_IS_BETTER, Task


@dataclasses.dataclass(frozen=True)
class Regression(Task):
    """Regression of a `[dim]` float vector per example with the squared error.

    Metrics: `mse` (mean squared error) and `mae` (mean absolute error) over every
    element of the split; lower is better.

    Examples:
      >>> import jax.numpy as jnp
      >>> from mtl_jax.losses import masked_mean
      >>> task = Regression("brightness", dim=1)
      >>> pred, target = jnp.array([[1.0], [3.0]]), jnp.array([[0.0], [3.0]])
      >>> valid = jnp.array([True, True])
      >>> float(masked_mean(*task.loss(pred, target, valid)))
      0.5
      >>> task.compute_metrics(task.metric_stats(pred, target, valid))
      {'mse': 0.5, 'mae': 0.5}
    """

    dim: int = 1

    @property
    def output_shape(self):
        return (self.dim,)

    @property
    def target_shape(self):
        return (self.dim,)

    def loss(self, pred, target, valid):
        # Per-element values and a mask of the same shape; the trainer reduces them.
        error = pred.astype(jnp.float32) - target
        return error**2, jnp.broadcast_to(valid[:, None], error.shape)

    def metric_stats(self, pred, target, valid):
        # Additive sums: the trainer adds them over batches (and devices) of the split.
        error = jnp.where(valid[:, None], pred.astype(jnp.float32) - target, 0.0)
        return {
            "squared": jnp.sum(error**2),
            "absolute": jnp.sum(jnp.abs(error)),
            "count": jnp.sum(valid) * self.dim,
        }

    def compute_metrics(self, stats):
        count = max(float(stats["count"]), 1.0)
        return {
            "mse": float(stats["squared"] / count),
            "mae": float(stats["absolute"] / count),
        }

    def metric_directions(self):
        return {"mse": LOWER_IS_BETTER, "mae": LOWER_IS_BETTER}

    def check_targets(self, target):
        super().check_targets(target)  # the shape
        if not np.all(np.isfinite(target)):
            raise ValueError(f"task {self.name!r}: targets must be finite")
