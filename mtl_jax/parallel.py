"""Data parallelism over a device mesh, and the train step guarded against non-finite values.

The train step stays single-device code (`mtl_jax.train.make_train_step(jit=False)`).
`make_parallel_train_step` jits it once on a mesh with one axis, `"data"`: the batch is
split along its first axis over that axis, the `TrainState` is replicated (or its large
leaves split too, see `state_shardings`), and XLA inserts the cross-device reductions.
Because the losses are means over the *global* batch inside `jit`, every per-task
gradient, the T×T Gramian and the weighting solve are global-batch quantities: 1, 2, 4
or 8 devices compute the same step up to floating-point summation order.

Multi-host: after `mtl_jax.distributed.initialize_distributed()`, every process builds the
same global batch sequence and `shard_batch` keeps only the rows its own devices hold,
so each process feeds its slice of every global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mtl_jax.models import MultiTaskModel
from mtl_jax.tasks import Task
from mtl_jax.train import TrainState, make_train_step
from mtl_jax.weighting import Weighting

PyTree = Any

# The one mesh axis: the batch is split along it.
DATA_AXIS = "data"

# Metrics the guarded step adds for the host loop (removed before logging).
FINITE_TASKS = "finite/tasks"  # bool [T]: task t's loss, gradient norm and head are finite
FINITE_SHARED = "finite/shared"  # bool []: shared params, statistics, optimizer and method state


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh with axis `"data"` over the first `num_devices` devices (0 = all).

    Raises:
      ValueError: `num_devices` exceeds the devices present, or a multi-process run asks
        for fewer than all of them.
    """
    devices = jax.devices()
    if num_devices == 0:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"config key 'parallel.num_devices' is {num_devices}, but {len(devices)} "
            f"device(s) are present ({devices[0].platform})"
        )
    if jax.process_count() > 1 and num_devices != len(devices):
        raise ValueError("config key 'parallel.num_devices' must be 0 (all) in a multi-process run")
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array held whole on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of an array split along its first axis over `"data"`."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def state_shardings(abstract_state: PyTree, mesh: Mesh, *, min_size: int = 0) -> PyTree:
    """Shardings for a `TrainState` (or any pytree of `jax.ShapeDtypeStruct`).

    Every leaf is replicated, except, when `min_size > 0`, leaves of at least `min_size`
    elements: those are split over `"data"` along their largest axis divisible by the
    number of devices (optimizer moments have the parameters' shapes, so they are split
    the same way). XLA gathers them where the step needs them whole; the results are the
    same as with replication.
    """
    count = mesh.shape[DATA_AXIS]

    def sharding(leaf):
        if min_size <= 0 or count == 1 or leaf.size < min_size:
            return replicated(mesh)
        axes = [a for a in np.argsort(leaf.shape)[::-1] if leaf.shape[a] % count == 0]
        if not axes:
            return replicated(mesh)
        spec = [None] * len(leaf.shape)
        spec[axes[0]] = DATA_AXIS
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree.map(sharding, abstract_state)


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Places a global host batch (arrays [B, ...]) on `mesh`, split along `"data"`.

    In a multi-process run each process passes the same global batch and only the rows
    held by its own devices are transferred.

    Raises:
      ValueError: B is not divisible by the number of devices.
    """
    sharding = batch_sharding(mesh)
    count = mesh.shape[DATA_AXIS]

    def put(x):
        x = np.asarray(x)
        if x.shape[0] % count:
            raise ValueError(
                f"batch of {x.shape[0]} examples cannot be split evenly over {count} devices"
            )
        rows = [index[0] for index in sharding.addressable_devices_indices_map(x.shape).values()]
        start = min(r.start or 0 for r in rows)
        stop = max(x.shape[0] if r.stop is None else r.stop for r in rows)
        return jax.make_array_from_process_local_data(sharding, x[start:stop], x.shape)

    return jax.tree.map(put, batch)


def to_host(x: jax.Array) -> np.ndarray:
    """The whole value of `x` on this host; a collective (every process must call it)
    when `x` is split over devices of several processes."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _all_finite(tree: PyTree) -> jax.Array:
    """Whether every inexact leaf of `tree` is finite (integer and key leaves always are)."""
    flags = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def finite_flags(
    new_state: TrainState, metrics: Mapping[str, jax.Array], names: tuple[str, ...]
) -> tuple[jax.Array, jax.Array]:
    """(per-task flags [T], shared flag []) for one step's outcome.

    Task t is finite when its loss, its gradient norm (methods that compute one) and its
    head's new parameters and statistics are; a non-finite head gradient shows in the
    latter, since each head is updated from its own task's gradient. The shared flag
    covers the shared parameters and statistics, the optimizer state and the method state.
    """
    per_task = jnp.isfinite(metrics["loss"])
    if "grad_norm" in metrics:
        per_task &= jnp.isfinite(metrics["grad_norm"])
    heads = jnp.stack(
        [
            _all_finite((new_state.params["tasks"][n], new_state.batch_stats["tasks"].get(n, {})))
            for n in names
        ]
    )
    shared = _all_finite(
        (
            new_state.params["shared"],
            new_state.batch_stats["shared"],
            new_state.opt_state,
            new_state.weighting_state,
        )
    )
    return per_task & heads, shared


def make_parallel_train_step(
    model: MultiTaskModel,
    tasks: Mapping[str, Task],
    tx: optax.GradientTransformation,
    weighting: Weighting,
    *,
    mesh: Mesh,
    state_sharding: PyTree,
    **step_options: Any,
) -> Callable[[TrainState, PyTree], tuple[TrainState, dict[str, jax.Array]]]:
    """`mtl_jax.train.make_train_step`, guarded against non-finite values and jitted on `mesh`.

    The returned `step(state, batch)` takes a batch placed by `shard_batch` and a state
    with shardings `state_sharding` (donated). When any value of the step's outcome is
    not finite, every field of the new state except `step` is the old one's (the step is
    skipped: parameters, statistics, optimizer and method state untouched); the metrics
    report it under `FINITE_TASKS` and `FINITE_SHARED`. Deciding to stop is the caller's.

    Args:
      model, tasks, tx, weighting: as for `make_train_step`.
      mesh: the mesh (`make_mesh`).
      state_sharding: the state's shardings (`state_shardings`).
      **step_options: keyword options of `make_train_step` (`rep_grad`, `head_grads`, ...).
    """
    step = make_train_step(model, tasks, tx, weighting, jit=False, **step_options)
    names = model.task_names

    def guarded(state: TrainState, batch: PyTree):
        new_state, metrics = step(state, batch)
        per_task, shared = finite_flags(new_state, metrics, names)
        ok = jnp.all(per_task) & shared
        kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
        metrics = {**metrics, FINITE_TASKS: per_task, FINITE_SHARED: shared}
        return kept._replace(step=new_state.step), metrics

    return jax.jit(
        guarded,
        in_shardings=(state_sharding, batch_sharding(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=0,
    )
