"""The step-time workloads W1, W2 and W3 of WORKLOADS.md, built from mtl_jax's modules.

Each workload is one model (`mtl_jax.models.build_model`), its tasks (`mtl_jax.tasks`),
one synthetic batch made once from a fixed seed, and the Adam learning rate. Layout is
NHWC (the spec's NCHW shapes transposed); the spec allows any layout and initialiser,
and the parameter counts are the check that the model is the spec's:

* W1 "multimnist-lenet": LeNet trunk, 2 × `Classification(10)` with MLP heads 50→50→10;
  shared 21,330, 3,060 per head, total 27,450.
* W2 "dense3-resnet": SmallResNet trunk, `Segmentation(13)`, `Depth`, `SurfaceNormal` with
  `DenseHead(64)` (Conv3×3 128→64 + ReLU + Conv1×1 64→C + bilinear ×4); shared 307,360,
  heads 73,792 + 64·C + C, total 529,841.
* W3 "celeba40-small": SmallResNet + global average pool, 40 × `BinaryLabels(1)` with
  linear heads 128→1; shared 307,360, 129 per head, total 312,520.

`build(name)` raises if the built model's counts differ from these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.processes import count_mismatches
from mtl_jax.models import MultiTaskModel, build_model
from mtl_jax.tasks import BinaryLabels, Classification, Depth, Segmentation, SurfaceNormal, Task

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Workload:
    """One built workload.

    Attributes:
      name: `"W1"`, `"W2"` or `"W3"`.
      title: the spec's name, e.g. `"multimnist-lenet"`.
      model: the multi-task model.
      tasks: task records keyed by name (the model's head names).
      batch: `{"image": [B, H, W, C] float32, "targets": {task: [B, ...]}}`, on device.
      learning_rate: Adam's learning rate.
      expected_counts: the spec's parameter counts, `{"shared": n, "total": n,
        "tasks": {task: n}}`.
    """

    name: str
    title: str
    model: MultiTaskModel
    tasks: Mapping[str, Task]
    batch: dict[str, Any]
    learning_rate: float
    expected_counts: dict[str, Any]


def _w1(rng: np.random.Generator) -> tuple:
    batch_size, num_classes = 256, 10
    tasks = {name: Classification(name, num_classes=num_classes) for name in ("L", "R")}
    model = build_model("lenet", tasks, head_hidden=(50,))
    image = rng.standard_normal((batch_size, 28, 28, 1), dtype=np.float32)
    targets = {
        name: rng.integers(0, num_classes, batch_size).astype(np.int32) for name in sorted(tasks)
    }
    counts = {"shared": 21_330, "total": 27_450, "tasks": dict.fromkeys(tasks, 3_060)}
    return "multimnist-lenet", model, tasks, image, targets, 1e-3, counts


def _w2(rng: np.random.Generator) -> tuple:
    batch_size, size, num_classes = 16, 64, 13
    tasks = {
        "segmentation": Segmentation("segmentation", num_classes, height=size, width=size),
        "depth": Depth("depth", height=size, width=size),
        "normal": SurfaceNormal("normal", height=size, width=size),
    }
    model = build_model("small_resnet", tasks, dense_head_hidden=64)
    image = rng.standard_normal((batch_size, size, size, 3), dtype=np.float32)
    normal = rng.standard_normal((batch_size, size, size, 3), dtype=np.float32)
    targets = {
        "segmentation": rng.integers(0, num_classes, (batch_size, size, size)).astype(np.int32),
        "depth": rng.random((batch_size, size, size, 1), dtype=np.float32),
        "normal": normal / np.linalg.norm(normal, axis=-1, keepdims=True),
    }
    # Conv3×3(128→64) + bias, then Conv1×1(64→C) + bias.
    head_hidden = 3 * 3 * 128 * 64 + 64
    counts = {
        "shared": 307_360,
        "total": 529_841,
        "tasks": {
            "segmentation": head_hidden + 845,
            "depth": head_hidden + 65,
            "normal": head_hidden + 195,
        },
    }
    return "dense3-resnet", model, tasks, image, targets, 1e-4, counts


def _w3(rng: np.random.Generator) -> tuple:
    batch_size, num_tasks = 128, 40
    names = [f"attr{i:02d}" for i in range(num_tasks)]
    tasks = {name: BinaryLabels(name, num_labels=1) for name in names}
    # No hidden layer: the head is the spec's Linear(128→1).
    model = build_model("small_resnet_pooled", tasks, head_hidden=())
    image = rng.standard_normal((batch_size, 64, 64, 3), dtype=np.float32)
    labels = rng.integers(0, 2, (batch_size, num_tasks)).astype(np.float32)
    targets = {name: labels[:, i : i + 1] for i, name in enumerate(names)}
    counts = {"shared": 307_360, "total": 312_520, "tasks": dict.fromkeys(names, 129)}
    return "celeba40-small", model, tasks, image, targets, 1e-3, counts


# Workload name -> builder of (title, model, tasks, image, targets, lr, expected counts).
_BUILDERS: dict[str, Callable[[np.random.Generator], tuple]] = {"W1": _w1, "W2": _w2, "W3": _w3}
WORKLOADS = tuple(_BUILDERS)


def parameter_counts(params: PyTree) -> dict[str, Any]:
    """`{"shared": n, "total": n, "tasks": {task: n}}` of `{"shared", "tasks"}` parameters.

    Works on arrays and on `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`).
    """

    def count(tree):
        return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(tree)))

    tasks = {name: count(tree) for name, tree in params["tasks"].items()}
    shared = count(params["shared"])
    return {"shared": shared, "total": shared + sum(tasks.values()), "tasks": tasks}


def check_parameter_counts(workload: Workload, params: PyTree) -> dict[str, Any]:
    """Returns the counts of `params`, or raises if they are not the spec's.

    Raises:
      AssertionError: listing every part (shared, total, each head) whose count differs.
    """
    counts = parameter_counts(params)
    expected = workload.expected_counts
    wrong = count_mismatches(counts, expected)
    if wrong:
        raise AssertionError(
            f"workload {workload.name} ({workload.title}): parameter counts differ from "
            f"WORKLOADS.md (built != spec): {'; '.join(wrong)}"
        )
    return counts


def build(name: str, *, seed: int = 0) -> Workload:
    """Builds workload `name` ("W1", "W2", "W3") with its batch drawn from `seed`.

    Inputs are i.i.d. N(0, 1) float32 and targets follow WORKLOADS.md (integer labels
    uniform over the classes; depth uniform in [0, 1); normals N(0, 1) scaled to unit
    length per pixel; binary labels uniform in {0, 1}). Targets are validated with each
    task's `check_targets`, and the model's parameter counts (from `jax.eval_shape`, no
    initialisation) with `check_parameter_counts`.

    Raises:
      ValueError: for an unknown workload name.
      AssertionError: if the model's parameter counts are not the spec's.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown workload {name!r}; valid workloads: {list(WORKLOADS)}")
    title, model, tasks, image, targets, lr, counts = _BUILDERS[name](np.random.default_rng(seed))
    for task_name, task in tasks.items():
        task.check_targets(targets[task_name])
    workload = Workload(
        name=name,
        title=title,
        model=model,
        tasks=tasks,
        batch={
            "image": jnp.asarray(image),
            "targets": {k: jnp.asarray(v) for k, v in targets.items()},
        },
        learning_rate=lr,
        expected_counts=counts,
    )
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), workload.batch["image"])
    check_parameter_counts(workload, shapes["params"])
    return workload
