"""Warm starts: a new run's variables from a finished run, a saved variables file, or
torchvision ResNet weights (`mtl_jax.models.pretrained`) for the shared trunk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from mtl_jax import workdir as wd
from mtl_jax.checkpointing import leaf_path
from mtl_jax.models import pretrained
from mtl_jax.models.multitask import TRUNK_STATS
from mtl_jax.train import TrainState


def variables_file(source: str | Path) -> Path:
    """The variables file of `source`: a run's workdir (its `params.msgpack`) or the file.

    Raises:
      FileNotFoundError: naming the path, when there is no such file.
    """
    path = Path(source)
    if path.is_dir():
        path = path / wd.PARAMS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(source)!r} holds no {wd.PARAMS_FILE}: not a finished run's workdir"
            )
    elif not path.is_file():
        raise FileNotFoundError(f"no variables file or run workdir at {str(source)!r}")
    return path


def read_variables(source: str | Path) -> dict[str, Any]:
    """`{"params", "batch_stats"}` as saved by a finished run (host numpy arrays)."""
    path = variables_file(source)
    try:
        return flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as error:
        raise ValueError(f"{str(path)!r} is not a variables file: {error}") from error


def _matched(current: Any, saved: Any, where: str) -> Any:
    """`saved` shaped and typed like `current` (and placed like it), or an error naming
    the first leaf that differs."""
    current_leaves, treedef = jax.tree_util.tree_flatten_with_path(current)
    saved_by_path = {
        leaf_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]
    }
    wanted = {leaf_path(p) for p, _ in current_leaves}
    extra = sorted(set(saved_by_path) - wanted)
    if extra:
        raise ValueError(f"{where}: the saved variables have leaves this model lacks: {extra[:5]}")
    leaves = []
    for path, leaf in current_leaves:
        name = leaf_path(path)
        if name not in saved_by_path:
            raise ValueError(f"{where}: the saved variables have no leaf {name!r}")
        value = np.asarray(saved_by_path[name])
        if value.shape != leaf.shape:
            raise ValueError(
                f"{where}: leaf {name!r} is {value.shape} in the saved variables, "
                f"{tuple(leaf.shape)} in this model"
            )
        leaves.append(jax.device_put(value.astype(leaf.dtype), leaf.sharding))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def is_pretrained_file(source: str | Path) -> bool:
    """Whether `warm_start` reads `source` as torchvision weights (by its suffix)."""
    return Path(source).suffix.lower() in pretrained.SUFFIXES


def _resnet_part(tree: dict) -> dict:
    """The entries of a trunk's variables that are ResNet modules (torchvision's)."""
    return {k: v for k, v in tree.items() if k in pretrained.RESNET_MODULES}


def _warm_start_pretrained(state: TrainState, source: str | Path) -> tuple[TrainState, list[str]]:
    """`state` with its ResNet trunk from the torchvision state dict at `source`."""
    where = f"init_from {str(source)!r}"
    state_dict = pretrained.read_state_dict(source)
    depth = pretrained.state_dict_depth(state_dict, source=source)
    # With per-task trunk statistics (`MultiTaskModel.input_bn="per_task"`) every task's
    # set starts from torchvision's running statistics.
    per_task = {
        name: stats[TRUNK_STATS]
        for name, stats in state.batch_stats["tasks"].items()
        if TRUNK_STATS in stats
    }
    shared = {
        "params": state.params["shared"],
        "batch_stats": next(iter(per_task.values())) if per_task else state.batch_stats["shared"],
    }
    # The trunk's own modules; others under "shared" (MTAN's tied blocks) stay fresh.
    trunk = {collection: _resnet_part(tree) for collection, tree in shared.items()}
    found = pretrained.resnet_depth(trunk)
    if found is None:
        raise ValueError(
            f"{where} holds torchvision ResNet-{depth} weights, which load into a ResNet "
            f"trunk only (config keys model.trunk='resnet{depth}', model.architecture "
            f"'hps' or 'mtan'); this model's shared modules are {sorted(shared['params'])}"
        )
    if found != depth:
        raise ValueError(
            f"{where} holds torchvision ResNet-{depth} weights but this model's trunk is a "
            f"ResNet-{found}: set config key model.trunk='resnet{depth}'"
        )
    width, wanted = state_dict["conv1.weight"].shape[0], trunk["params"]["conv1"]["kernel"]
    if width != wanted.shape[-1]:
        raise ValueError(
            f"{where}: its ResNet-{depth} has stem width {width}, this model's "
            f"{wanted.shape[-1]}; set config key model.width_multiplier to "
            f"{width / 64:g} (1.0 for torchvision's models)"
        )
    loaded = pretrained.resnet_variables(state_dict, depth, like=trunk, source=source)
    params = _matched(trunk["params"], loaded["params"], f"{where} (params)")
    params = {"shared": {**shared["params"], **params}, "tasks": state.params["tasks"]}
    stats = state.batch_stats
    if per_task:
        tasks = dict(stats["tasks"])
        for name, current in per_task.items():
            filled = _matched(
                _resnet_part(current),
                loaded["batch_stats"],
                f"{where} (batch_stats of task {name!r})",
            )
            tasks[name] = {**tasks[name], TRUNK_STATS: {**current, **filled}}
        stats = {"shared": stats["shared"], "tasks": tasks}
    else:
        filled = _matched(trunk["batch_stats"], loaded["batch_stats"], f"{where} (batch_stats)")
        stats = {"shared": {**shared["batch_stats"], **filled}, "tasks": stats["tasks"]}
    state = state._replace(params=params, batch_stats=stats)
    return state, list(state.params["tasks"])


def warm_start(state: TrainState, source: str | Path) -> tuple[TrainState, list[str]]:
    """`state` with the shared variables, and the heads of the tasks both runs have,
    taken from `source` (see `variables_file`), or with its ResNet trunk taken from
    torchvision weights.

    The shared trunk must match exactly; a task the saved run does not have keeps its
    fresh head (the returned list names those tasks), and a saved task this model lacks
    is ignored. The optimizer and weighting states stay fresh.

    A `source` ending in .pth, .pt, .npz or .safetensors is a torchvision ResNet-18/50
    state dict (`mtl_jax.models.pretrained`): it fills the shared ResNet trunk
    (`model.trunk` "resnet18"/"resnet50", width multiplier 1, any output stride; the
    "hps" or "mtan" architecture); every head (and MTAN's shared attention blocks) stays
    fresh, so the returned list names every task. With per-task trunk statistics
    (`model.input_bn` "per_task") each task's set starts from the file's.

    Raises:
      FileNotFoundError: no variables at `source`.
      ImportError: a .pth/.pt `source` without torch installed.
      ValueError: naming the leaf, when the saved shared variables or a shared task's
        head differ in structure or shape; for torchvision weights, naming the config key
        when the trunk is not a ResNet of the file's depth and width, or naming the
        torchvision name when one is missing, extra or mis-shaped.
    """
    if is_pretrained_file(source):
        return _warm_start_pretrained(state, source)
    saved = read_variables(source)
    where = f"init_from {str(source)!r}"
    params, stats, fresh = {}, {}, []
    for collection, current, out in (
        ("params", state.params, params),
        ("batch_stats", state.batch_stats, stats),
    ):
        saved_collection = saved.get(collection, {})
        out["shared"] = _matched(
            current["shared"], saved_collection.get("shared", {}), f"{where} ({collection})"
        )
        out["tasks"] = {}
        saved_tasks = saved_collection.get("tasks", {})
        for name, head in current["tasks"].items():
            if name in saved_tasks:
                out["tasks"][name] = _matched(
                    head, saved_tasks[name], f"{where} ({collection}, task {name!r})"
                )
            else:
                out["tasks"][name] = head
                if collection == "params":
                    fresh.append(name)
    return state._replace(params=params, batch_stats=stats), fresh
