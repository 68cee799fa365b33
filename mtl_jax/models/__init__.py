"""Models: trunks, heads and the multi-task composition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn

from mtl_jax.models.heads import DenseHead, MLPHead
from mtl_jax.models.multitask import MultiTaskModel
from mtl_jax.models.trunks import LeNet, SeedCNN, SmallResNet
from mtl_jax.tasks import Task

__all__ = [
    "TRUNKS",
    "DenseHead",
    "LeNet",
    "MLPHead",
    "MultiTaskModel",
    "SeedCNN",
    "SmallResNet",
    "build_model",
]

# Trunk name (as written in configs) -> constructor.
TRUNKS = {
    "lenet": LeNet,
    "seed_cnn": SeedCNN,
    "small_resnet": SmallResNet,
    "small_resnet_pooled": lambda: SmallResNet(global_pool=True),
}


def build_model(
    trunk: str,
    tasks: Mapping[str, Task],
    *,
    head_hidden: Sequence[int] = (50,),
    dense_head_hidden: int = 64,
) -> MultiTaskModel:
    """Builds a hard-parameter-sharing model: trunk `trunk` and one head per task.

    Vector tasks get an `MLPHead(head_hidden)`; dense tasks a `DenseHead(dense_head_hidden)`.

    Raises:
      ValueError: if `trunk` is not a known trunk name (the message lists them).
    """
    if trunk not in TRUNKS:
        raise ValueError(f"unknown trunk {trunk!r}; valid trunks: {sorted(TRUNKS)}")
    heads: dict[str, nn.Module] = {}
    for name, task in tasks.items():
        if task.dense:
            heads[name] = DenseHead(hidden=dense_head_hidden, output_shape=task.output_shape)
        else:
            heads[name] = MLPHead(hidden=tuple(head_hidden), num_outputs=task.output_shape[0])
    return MultiTaskModel(trunk=TRUNKS[trunk](), heads=heads)
