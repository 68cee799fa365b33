"""Warm starts: a new run's variables from a finished run or a saved variables file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from mtl_jax import workdir as wd
from mtl_jax.checkpointing import leaf_path
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


def warm_start(state: TrainState, source: str | Path) -> tuple[TrainState, list[str]]:
    """`state` with the shared variables, and the heads of the tasks both runs have,
    taken from `source` (see `variables_file`).

    The shared trunk must match exactly; a task the saved run does not have keeps its
    fresh head (the returned list names those tasks), and a saved task this model lacks
    is ignored. The optimizer and weighting states stay fresh.

    Raises:
      FileNotFoundError: no variables at `source`.
      ValueError: naming the leaf, when the saved shared variables or a shared task's
        head differ in structure or shape.
    """
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
