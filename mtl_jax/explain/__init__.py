"""Explanations: where each task looks in the image, and where the tasks' gradients conflict.

* `saliency`: per-task gradient × input, integrated gradients and Grad-CAM maps of a
  `MultiTaskModel`, and the overlap of two tasks' maps;
* `conflict`: per-layer cosines between the tasks' gradients of the shared parameters,
  which the training loop logs every `config.conflict_every_steps` steps;
* `report`: `explain_run(workdir)`, a finished run's `saliency.png` and `saliency.json`
  (`mtl-jax explain --workdir RUN`; it needs the `experiments` extra and is imported only
  when used).
"""

from typing import Any

from mtl_jax.explain.conflict import (
    ConflictLog,
    blocks_of,
    conflict_record,
    layer_cosines,
    make_conflict_step,
)
from mtl_jax.explain.saliency import (
    METHODS,
    RULES,
    SpatialLayer,
    TaskSaliency,
    grad_cam,
    gradient_x_input,
    integrated_gradients,
    last_spatial_layer,
    overlap,
    task_saliency,
    task_scalar,
)

__all__ = [
    "METHODS",
    "RULES",
    "ConflictLog",
    "SpatialLayer",
    "TaskSaliency",
    "blocks_of",
    "conflict_record",
    "explain_run",
    "grad_cam",
    "gradient_x_input",
    "integrated_gradients",
    "last_spatial_layer",
    "layer_cosines",
    "make_conflict_step",
    "overlap",
    "task_saliency",
    "task_scalar",
]


def __getattr__(name: str) -> Any:
    if name == "explain_run":
        from mtl_jax.explain.report import explain_run

        return explain_run
    raise AttributeError(f"module 'mtl_jax.explain' has no attribute {name!r}")
