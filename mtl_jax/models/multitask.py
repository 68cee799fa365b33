"""`MultiTaskModel`: one shared trunk and one head per task, as pure functions.

Variables are split by ownership::

    {"params":      {"shared": trunk params,      "tasks": {name: head params}},
     "batch_stats": {"shared": trunk statistics,  "tasks": {name: head statistics}}}

"shared" always means "used by every task"; whatever only one task uses lives under
`tasks[name]`. Task vectors (losses, weights) follow sorted task-name order, which is
also JAX's flatten order for the `tasks` dict.

Tied head modules. Some architectures run a module *inside every task's branch* with one
set of weights: MTAN's attention blocks (the 3×3 "f" convolutions between attention
masks) are applied to each task's attended features. Those weights are used by every task,
so they belong under "shared", yet they run after the split into per-task heads. The model
handles this exactly: the names in `tied` are top-level submodules of every head whose
parameters are stored once, under `params["shared"][name]`, and `apply_shared` returns
them inside the representation::

    rep = {"features": trunk output, "tied": {name: params["shared"][name]}}

`apply_head` merges `rep["tied"]` into the head's parameters, so each task's gradient
w.r.t. its copy of the representation includes its gradient w.r.t. the tied weights, and
the trunk pullback (an identity on those leaves) adds them to the shared gradient — the
per-task Jacobian of `mtl_jax.jacobian` covers them with no special case. Their BatchNorm
running statistics are kept per task (under `batch_stats["tasks"][name]`): in training
mode BatchNorm normalises each task's features with that task's batch statistics, as the
reference code does, and the running averages used at evaluation then describe the same
features (torch instead keeps one average over the three tasks' batches in turn).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any


def _apply(module: nn.Module, params, batch_stats, x, *, train: bool, rng, where: str):
    """Applies a Linen module; returns (output, updated batch statistics)."""
    variables = {"params": params, "batch_stats": batch_stats}
    rngs = None if rng is None else {"dropout": rng}
    if not train:
        return module.apply(variables, x, train=False, rngs=rngs), batch_stats
    try:
        out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
    except flax.errors.InvalidRngError as error:
        raise ValueError(
            f"{where} uses dropout: training needs a PRNG key, pass rng=... ({error})"
        ) from error
    return out, updates.get("batch_stats", {})


def _shapes(tree):
    return jax.tree.map(lambda leaf: leaf.shape, tree)


def _to_float32(tree):
    return jax.tree.map(lambda leaf: leaf.astype(jnp.float32), tree)


@dataclasses.dataclass(frozen=True)
class MultiTaskModel:
    """Shared trunk, one head per task: `head_t(trunk(x))` for every task t.

    Attributes:
      trunk: Linen module mapping images [B, H, W, C] to the shared representation (an
        array or a pytree of arrays, e.g. MTAN's encoder and decoder features).
      heads: Linen module per task name, mapping the representation to the prediction.
      tied: names of top-level submodules present in every head whose parameters are
        shared by all tasks (see the module docstring); empty for hard parameter sharing.

    Randomness: `apply_shared`, `apply_head` and `apply` take an optional `rng` used for
    dropout in training; pass the same key to all calls of one step, the model derives an
    independent stream for the trunk and for each head from it.
    """

    trunk: nn.Module
    heads: Mapping[str, nn.Module]
    tied: tuple[str, ...] = ()

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.heads))

    def _stream(self, rng: jax.Array | None, name: str | None):
        """Independent dropout key per component: 0 for the trunk, 1 + index per head."""
        if rng is None:
            return None
        index = 0 if name is None else 1 + self.task_names.index(name)
        return jax.random.fold_in(rng, index)

    def init(self, rng: jax.Array, image: jax.Array) -> dict[str, PyTree]:
        """Initialises all variables from an example image batch [B, H, W, C].

        Raises:
          ValueError: naming the task, if a head cannot be built on the representation
            (e.g. an output size the architecture cannot produce), or if a tied module is
            missing from a head, differs between heads or clashes with a trunk name.
        """
        trunk_rng, *head_rngs = jax.random.split(rng, 1 + len(self.heads))
        trunk_vars = self.trunk.init(trunk_rng, image, train=False)
        features = self.trunk.apply(trunk_vars, image, train=False)
        shared = dict(trunk_vars["params"])
        clash = sorted(set(self.tied) & set(shared))
        if clash:
            raise ValueError(f"tied head modules {clash} clash with trunk parameter names")
        params = {"shared": shared, "tasks": {}}
        stats = {"shared": trunk_vars.get("batch_stats", {}), "tasks": {}}
        for name, head_rng in zip(self.task_names, head_rngs, strict=True):
            try:
                head_vars = self.heads[name].init(head_rng, features, train=False)
            except ValueError as error:
                raise ValueError(f"task {name!r}: {error}") from error
            head_params = dict(head_vars["params"])
            for key in self.tied:
                if key not in head_params:
                    raise ValueError(f"task {name!r}: head has no tied module {key!r}")
                tied_params = head_params.pop(key)
                # The first task (sorted order) initialises the tied weights.
                reference = shared.setdefault(key, tied_params)
                if _shapes(reference) != _shapes(tied_params):
                    raise ValueError(f"task {name!r}: tied module {key!r} differs between heads")
            params["tasks"][name] = head_params
            stats["tasks"][name] = head_vars.get("batch_stats", {})
        return {"params": params, "batch_stats": stats}

    def apply_shared(self, params, batch_stats, image, *, train: bool, rng=None):
        """Trunk forward: returns (representation, updated shared batch statistics)."""
        trunk_params = params
        if self.tied:
            trunk_params = {k: v for k, v in params.items() if k not in self.tied}
        features, stats = _apply(
            self.trunk,
            trunk_params,
            batch_stats,
            image,
            train=train,
            rng=self._stream(rng, None),
            where="the trunk",
        )
        if not self.tied:
            return features, stats
        return {"features": features, "tied": {k: params[k] for k in self.tied}}, stats

    def apply_head(self, name: str, params, batch_stats, rep, *, train: bool, rng=None):
        """Head forward of task `name`: returns (float32 prediction, updated head statistics)."""
        if self.tied:
            params = {**params, **rep["tied"]}
            rep = rep["features"]
        pred, stats = _apply(
            self.heads[name],
            params,
            batch_stats,
            rep,
            train=train,
            rng=self._stream(rng, name),
            where=f"the head of task {name!r}",
        )
        return _to_float32(pred), stats

    def apply(self, variables: Mapping[str, PyTree], image, *, train: bool = False, rng=None):
        """Full forward: returns ({task: prediction}, updated batch statistics)."""
        params, stats = variables["params"], variables["batch_stats"]
        rep, shared_stats = self.apply_shared(
            params["shared"], stats["shared"], image, train=train, rng=rng
        )
        preds, task_stats = {}, {}
        for name in self.task_names:
            preds[name], task_stats[name] = self.apply_head(
                name, params["tasks"][name], stats["tasks"][name], rep, train=train, rng=rng
            )
        return preds, {"shared": shared_stats, "tasks": task_stats}
