"""Boundary (edge) detection: per-pixel edge probabilities and their F-measures."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import losses
from mtl_jax.tasks.base import HIGHER_IS_BETTER, Task, f1_score

# Thresholds at which ODS-F is searched (probabilities 0.01 ... 0.99).
_EDGE_THRESHOLDS = np.linspace(0.01, 0.99, 99, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Boundary(Task):
    """Boundary / edge detection: a per-pixel edge probability map.

    Loss: class-balanced per-pixel BCE (HED, Xie & Tu 2015). Targets are `[H, W]` maps
    in {0, 1}. Metrics (fractions), from counts accumulated over the whole split:
    `f1` (per-pixel F1 at probability 0.5) and `ods_f` (the best F1 over 99 thresholds
    shared by the whole split, i.e. ODS-F). Pixels are matched exactly, without the
    localisation tolerance of the BSDS benchmark.
    """

    height: int = 28
    width: int = 28

    dense: ClassVar[bool] = True

    @property
    def output_shape(self):
        return (self.height, self.width, 1)

    @property
    def target_shape(self):
        return (self.height, self.width)

    def loss(self, pred, target, valid):
        mask = jnp.broadcast_to(valid[:, None, None], target.shape)
        return losses.class_balanced_bce(pred[..., 0], target, mask), mask

    def metric_stats(self, pred, target, valid):
        prob = jax.nn.sigmoid(pred[..., 0].astype(jnp.float32))
        truth = (target > 0)[None] & valid[None, :, None, None]
        valid_px = valid[None, :, None, None]
        thresholds = jnp.asarray(_EDGE_THRESHOLDS)[:, None, None, None]
        predicted = (prob[None] >= thresholds) & valid_px
        axes = (1, 2, 3)
        return {
            "tp": jnp.sum(predicted & truth, axis=axes),
            "fp": jnp.sum(predicted & ~truth, axis=axes),
            "fn": jnp.sum(~predicted & truth, axis=axes),
        }

    def compute_metrics(self, stats):
        f1 = f1_score(stats["tp"], stats["fp"], stats["fn"])
        at_half = int(np.argmin(np.abs(_EDGE_THRESHOLDS - 0.5)))
        return {"f1": float(f1[at_half]), "ods_f": float(np.max(f1))}

    def metric_directions(self):
        return {"f1": HIGHER_IS_BETTER, "ods_f": HIGHER_IS_BETTER}

    def check_targets(self, target):
        super().check_targets(target)
        bad = (target != 0) & (target != 1)
        if np.any(bad):
            raise ValueError(
                f"task {self.name!r}: {int(bad.sum())} boundary targets are not 0 or 1, e.g. "
                f"{np.unique(np.asarray(target)[bad])[:5].tolist()}"
            )
