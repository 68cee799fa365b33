"""Per-layer gradient conflict: cosines between the tasks' gradients, block by block.

For the per-task gradients of the shared parameters, `g_t = ∂L_t/∂θ_shared`, and a
partition of those parameters into blocks (`mtl_jax.param_blocks`; `"layer"` by default:
one block per module that owns parameters, a kernel with its bias), the conflict of tasks
i and j in block b is the cosine of their gradients restricted to the block,

    cos_b(i, j) = ⟨g_i|b, g_j|b⟩ / (‖g_i|b‖ ‖g_j|b‖),

read off the per-block Gramians (`row_math.block_gramians`) of the Jacobian rows of one
forward (`jacobian.forward_with_pullbacks` + `jacobian.shared_jacobian`); it is 0 where
either restricted gradient is zero. Negative cosines are where the tasks pull a layer in
opposite directions, positive ones where they agree: the whole-gradient `grad_cosine`
averages over all layers and can hide a layer that conflicts.

In training (`config.conflict_every_steps = N`, a multiple of `log_every_steps`; 0 = off)
`ConflictLog` computes it every N-th step, in its own jitted function, on that step's
state and batch just before the train step runs, with the train step's forward (training
mode, the step's dropout key): the cosines describe exactly the gradients the step used.
The train step, its outputs and the run's other records are unchanged (bit for bit), and
since the cosines are a function of the state and the batch, a resumed run logs them
identically. The step's train record (a metrics.jsonl line) gains two fields:

    "conflict_by_layer": {block: mean over task pairs i < j of cos_b(i, j)}
    "conflict_cosine_by_layer": {block: [[cos_b(i, j)]] T × T, sorted task order}

Blocks are named by their module path (`"Conv_0"`, `"BasicBlock_1/_ConvBN_0/Conv_0"`) in
the parameters' flattening order. `mtl_jax.plots.plot_run` draws `conflict_by_layer.png`
(blocks × steps) from the first field; TensorBoard and train.log show it as scalars
`conflict_by_layer/<block>`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from mtl_jax import jacobian, param_blocks, row_math
from mtl_jax.train import TrainState, step_keys

if TYPE_CHECKING:
    from mtl_jax.models import MultiTaskModel
    from mtl_jax.tasks import Task

PyTree = Any

MEAN_FIELD = "conflict_by_layer"
PAIRS_FIELD = "conflict_cosine_by_layer"


def blocks_of(
    model: MultiTaskModel,
    shared_params: PyTree,
    shared_stats: PyTree,
    image: Any,
    blocking: str = "layer",
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """`(block of every shared leaf in flattening order, block names)` under `blocking`.

    Names: the owning module's path for `"layer"`, the parameter's path for `"tensor"`,
    `("all",)` for `"whole"` and `("rest", <last layer>)` for `"last_layer"`. Arrays may
    be abstract (`jax.ShapeDtypeStruct`): only paths and shapes are read.
    """
    param_blocks.check(blocking, "conflict blocks")
    paths = param_blocks.leaf_paths(shared_params)
    last = None
    if blocking == "last_layer":
        order = param_blocks.call_order(
            lambda p, s, x: model.apply_shared(p, s, x, train=False),
            shared_params,
            shared_stats,
            image,
        )
        last = param_blocks.last_layer(shared_params, order)
    ids, count = param_blocks.assign(shared_params, blocking, last=last)
    if blocking == "whole":
        return ids, ("all",)
    if blocking == "last_layer":
        return ids, ("rest", "/".join(last))
    names: list[str] = [""] * count
    for path, block in zip(paths, ids, strict=True):
        names[block] = "/".join(path if blocking == "tensor" else path[:-1])
    return ids, tuple(names)


def layer_cosines(
    model: MultiTaskModel,
    tasks: Mapping[str, Task],
    params: PyTree,
    batch_stats: PyTree,
    batch: Mapping[str, Any],
    *,
    blocking: str = "layer",
    train: bool = True,
    rng: jax.Array | None = None,
    jacobian_strategy: str = "unrolled",
    jacobian_chunk_size: int | None = None,
) -> jax.Array:
    """Per-block cosines [NB, T, T] of the tasks' shared-parameter gradients on `batch`.

    Args:
      model: the multi-task model.
      tasks: its tasks by name.
      params: `{"shared", "tasks"}` parameters.
      batch_stats: the same split of BatchNorm statistics.
      batch: `{"image", "targets"}` (optionally `"valid"`), as for a train step.
      blocking: the partition (`param_blocks.BLOCKINGS`); block order as in `blocks_of`.
      train: the forward's mode (the train step's: True).
      rng: the forward's dropout key (the train step's: its step key's model key).
      jacobian_strategy: `strategy` of `jacobian.shared_jacobian`.
      jacobian_chunk_size: `chunk_size` of `jacobian.shared_jacobian`.
    """
    pullbacks = jacobian.forward_with_pullbacks(
        model, tasks, params, batch_stats, batch, train=train, rng=rng
    )
    rows = jacobian.shared_jacobian(
        pullbacks, strategy=jacobian_strategy, chunk_size=jacobian_chunk_size
    )
    ids, names = blocks_of(model, params["shared"], batch_stats["shared"], batch["image"], blocking)
    return row_math.gramian_norms_and_cosines(row_math.block_gramians(rows, ids, len(names)))[1]


def make_conflict_step(
    model: MultiTaskModel,
    tasks: Mapping[str, Task],
    *,
    blocking: str = "layer",
    jacobian_strategy: str = "unrolled",
    jacobian_chunk_size: int | None = None,
) -> Callable[[TrainState, Mapping[str, Any]], dict[str, jax.Array]]:
    """`conflict(state, batch) -> {"cosine": [NB, T, T], "step": state.step + 1}`: the
    per-block cosines of the gradients the train step would take from `state` on
    `batch` (the same forward: training mode, the step's dropout key). Not jitted."""

    def conflict(state: TrainState, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
        keys = step_keys(state.rng, state.step)
        cosine = layer_cosines(
            model,
            tasks,
            state.params,
            state.batch_stats,
            batch,
            blocking=blocking,
            rng=keys.model,
            jacobian_strategy=jacobian_strategy,
            jacobian_chunk_size=jacobian_chunk_size,
        )
        return {"cosine": cosine, "step": state.step + 1}

    return conflict


def conflict_record(cosines: np.ndarray, blocks: Sequence[str]) -> dict[str, dict]:
    """The two record fields (module docstring) of per-block cosines [NB, T, T]."""
    cosines = np.asarray(cosines)
    if cosines.ndim != 3 or cosines.shape[0] != len(blocks):
        raise ValueError(f"cosines of shape {cosines.shape} for {len(blocks)} blocks")
    upper = np.triu_indices(cosines.shape[-1], 1)
    means = cosines[:, upper[0], upper[1]].astype(np.float64).mean(axis=1)
    return {
        MEAN_FIELD: {b: float(m) for b, m in zip(blocks, means, strict=True)},
        PAIRS_FIELD: {b: c.tolist() for b, c in zip(blocks, cosines, strict=True)},
    }


class ConflictLog:
    """The training loop's per-layer conflict, every `every`-th step (see the module
    docstring).

    `wrap(train_step)` returns a step function with the train step's signature and
    outputs that, before every `every`-th call, runs the conflict function on the same
    state and batch (the state is donated only afterwards). Calls are numbered from
    `first`, one per training step. `fields(step)` gives the record fields of `step`
    (reading the result from the device), or `{}` when it was not computed.

    Args:
      conflict: a jitted `make_conflict_step` function.
      model: the model (to name the blocks).
      every: the period in steps (≥ 1).
      first: the number of the first step the wrapped function will take.
      blocking: the partition the conflict function uses.
    """

    def __init__(
        self,
        conflict: Callable[[TrainState, Mapping[str, Any]], dict[str, jax.Array]],
        *,
        model: MultiTaskModel,
        every: int,
        first: int,
        blocking: str = "layer",
    ):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self._conflict, self._model, self._blocking = conflict, model, blocking
        self.every = every
        self._next = first
        self._pending: dict[int, dict[str, jax.Array]] = {}
        self.blocks: tuple[str, ...] | None = None

    @classmethod
    def for_run(
        cls,
        model: MultiTaskModel,
        tasks: Mapping[str, Task],
        *,
        every: int,
        first: int,
        mesh: jax.sharding.Mesh,
        state_sharding: PyTree,
        blocking: str = "layer",
        jacobian_strategy: str = "unrolled",
        jacobian_chunk_size: int | None = None,
    ) -> ConflictLog:
        """The log of a run on `mesh`: the conflict function jitted with the train
        step's state and batch shardings, its results replicated (every process reads
        them)."""
        from mtl_jax import parallel

        conflict = make_conflict_step(
            model,
            tasks,
            blocking=blocking,
            jacobian_strategy=jacobian_strategy,
            jacobian_chunk_size=jacobian_chunk_size,
        )
        jitted = jax.jit(
            conflict,
            in_shardings=(state_sharding, parallel.batch_sharding(mesh)),
            out_shardings=parallel.replicated(mesh),
        )
        return cls(jitted, model=model, every=every, first=first, blocking=blocking)

    def wrap(self, train_step: Callable[..., Any]) -> Callable[..., Any]:
        def step(state: TrainState, batch: Mapping[str, Any]):
            number = self._next
            self._next += 1
            if number % self.every == 0:
                if self.blocks is None:
                    _, self.blocks = blocks_of(
                        self._model,
                        state.params["shared"],
                        state.batch_stats["shared"],
                        batch["image"],
                        self._blocking,
                    )
                self._pending[number] = self._conflict(state, batch)
            return train_step(state, batch)

        return step

    def fields(self, step: int) -> dict[str, dict]:
        out = self._pending.pop(step, None)
        if out is None:
            return {}
        out = jax.device_get(out)
        if int(out["step"]) != step:  # the wrapped step was not called once per step
            raise RuntimeError(f"conflict of step {int(out['step'])} read as step {step}")
        return conflict_record(np.asarray(out["cosine"]), self.blocks)
