"""`MultiTaskModel`: one shared trunk and one head per task, as pure functions.

Variables are split by ownership::

    {"params":      {"shared": trunk params,      "tasks": {name: head params}},
     "batch_stats": {"shared": trunk statistics,  "tasks": {name: head statistics}}}

"shared" always means "used by every task"; whatever only one task uses lives under
`tasks[name]`. Task vectors (losses, weights) follow sorted task-name order, which is
also JAX's flatten order for the `tasks` dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

PyTree = Any


def _apply(module: nn.Module, params, batch_stats, x, *, train: bool):
    """Applies a Linen module; returns (output, updated batch statistics)."""
    variables = {"params": params, "batch_stats": batch_stats}
    if not train:
        return module.apply(variables, x, train=False), batch_stats
    out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
    return out, updates.get("batch_stats", {})


@dataclasses.dataclass(frozen=True)
class MultiTaskModel:
    """Hard parameter sharing: `head_t(trunk(x))` for every task t.

    Attributes:
      trunk: Linen module mapping images [B, H, W, C] to the shared representation.
      heads: Linen module per task name, mapping the representation to the prediction.
    """

    trunk: nn.Module
    heads: Mapping[str, nn.Module]

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.heads))

    def init(self, rng: jax.Array, image: jax.Array) -> dict[str, PyTree]:
        """Initialises all variables from an example image batch [B, H, W, C]."""
        trunk_rng, *head_rngs = jax.random.split(rng, 1 + len(self.heads))
        trunk_vars = self.trunk.init(trunk_rng, image, train=False)
        rep = self.trunk.apply(trunk_vars, image, train=False)
        params = {"shared": trunk_vars["params"], "tasks": {}}
        stats = {"shared": trunk_vars.get("batch_stats", {}), "tasks": {}}
        for name, head_rng in zip(self.task_names, head_rngs, strict=True):
            head_vars = self.heads[name].init(head_rng, rep, train=False)
            params["tasks"][name] = head_vars["params"]
            stats["tasks"][name] = head_vars.get("batch_stats", {})
        return {"params": params, "batch_stats": stats}

    def apply_shared(self, params, batch_stats, image, *, train: bool):
        """Trunk forward: returns (representation, updated shared batch statistics)."""
        return _apply(self.trunk, params, batch_stats, image, train=train)

    def apply_head(self, name: str, params, batch_stats, rep, *, train: bool):
        """Head forward of task `name`: returns (prediction, updated head statistics)."""
        return _apply(self.heads[name], params, batch_stats, rep, train=train)

    def apply(self, variables: Mapping[str, PyTree], image, *, train: bool = False):
        """Full forward: returns ({task: prediction}, updated batch statistics)."""
        params, stats = variables["params"], variables["batch_stats"]
        rep, shared_stats = self.apply_shared(params["shared"], stats["shared"], image, train=train)
        preds, task_stats = {}, {}
        for name in self.task_names:
            preds[name], task_stats[name] = self.apply_head(
                name, params["tasks"][name], stats["tasks"][name], rep, train=train
            )
        return preds, {"shared": shared_stats, "tasks": task_stats}
