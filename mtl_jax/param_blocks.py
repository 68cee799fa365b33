"""Parameter blocks: partitions of the shared parameters for per-block Gramians.

Some methods look at the per-task gradients block by block instead of as one vector
(DESIGN.md: the Gramian "optionally per parameter block"). GradVac's per-layer and
per-matrix variants (Wang et al., ICLR 2021; LibMTL's `group_type` 1 and 2) keep one cosine
target per block and task pair. GradNorm measures its gradient norms on the subset `W` of
the weights, "generally chosen as the last shared layer" (Chen et al., ICML 2018, Sec. 3).

A blocking assigns every leaf of the shared-parameter tree to one block:

* `"whole"`: one block, the whole shared gradient (every method's default);
* `"layer"`: one block per module that owns parameters directly (a kernel together with its
  bias, a BatchNorm's scale with its bias) — LibMTL's `group_type=1`;
* `"tensor"`: one block per parameter array — LibMTL's `group_type=2`;
* `"last_layer"`: two blocks, 0 = every other parameter, 1 = the trunk's last layer of
  weights: of the modules that own a kernel (a parameter of rank ≥ 2), the one the trunk's
  forward calls last, with all of its own parameters. A BatchNorm after that layer is not
  a layer of weights and stays in block 0. Flax parameter dicts are sorted by name when
  flattened, so "last" comes from the call order of a traced forward (`call_order`), never
  from the names.

Blocks are numbered in the leaves' flattening order (`"layer"`, `"tensor"`) or as above; a
method that keeps per-block state gets the block count from `count` at `init`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax

BLOCKINGS = ("whole", "layer", "tensor", "last_layer")

Path = tuple[str, ...]


def check(blocking: str, where: str) -> None:
    """Raises ValueError naming `where` unless `blocking` is one of `BLOCKINGS`."""
    if blocking not in BLOCKINGS:
        raise ValueError(f"{where}: blocks must be one of {list(BLOCKINGS)}, got {blocking!r}")


def _key_name(key) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def leaf_paths(tree: Any) -> list[Path]:
    """Path of every leaf of `tree` (dict keys as strings), in flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [tuple(_key_name(k) for k in path) for path, _ in flat]


def call_order(fn: Callable[..., Any], *args: Any) -> tuple[Path, ...]:
    """Scope paths of the Flax modules that `fn(*args)` calls, in call order.

    `fn` is traced abstractly (`jax.eval_shape`; nothing runs); `args` may be arrays,
    tracers or `jax.ShapeDtypeStruct`s. A module called twice appears twice.
    """
    order: list[Path] = []

    def record(next_fun, call_args, call_kwargs, context):
        scope = context.module.scope
        if context.method_name != "setup" and scope is not None:
            order.append(tuple(scope.path))
        return next_fun(*call_args, **call_kwargs)

    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), args)
    with nn.intercept_methods(record):
        jax.eval_shape(fn, *shapes)
    return tuple(order)


def last_layer(tree: Any, order: Sequence[Path]) -> Path:
    """The module path, among `order`'s, of the last-called module owning a kernel in `tree`.

    Raises:
      ValueError: if no module in `order` owns a parameter of rank ≥ 2 in `tree`.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    owners = {tuple(_key_name(k) for k in path[:-1]) for path, leaf in flat if len(leaf.shape) >= 2}
    for path in reversed(order):
        if path in owners:
            return path
    raise ValueError(
        "blocks='last_layer': no module called by the trunk owns a kernel (a parameter of "
        f"rank >= 2); modules called: {list(order)}"
    )


def assign(tree: Any, blocking: str, *, last: Path | None = None) -> tuple[tuple[int, ...], int]:
    """`(block index of every leaf in flattening order, number of blocks)` of `tree`.

    Args:
      tree: the shared parameters, or anything shaped like them (one task's gradient).
      blocking: one of `BLOCKINGS`.
      last: with `"last_layer"`, the module path of the last layer (`last_layer`).
    """
    check(blocking, "param_blocks.assign")
    paths = leaf_paths(tree)
    if blocking == "whole":
        return (0,) * len(paths), 1
    if blocking == "tensor":
        return tuple(range(len(paths))), len(paths)
    if blocking == "last_layer":
        if last is None:
            raise ValueError("blocks='last_layer' needs the path of the last layer")
        ids = tuple(int(path[:-1] == tuple(last)) for path in paths)
        if 1 not in ids:
            raise ValueError(f"blocks='last_layer': no parameter under {list(last)}")
        return ids, 2
    owners: dict[Path, int] = {}
    ids = tuple(owners.setdefault(path[:-1], len(owners)) for path in paths)
    return ids, len(owners)


def count(tree: Any, blocking: str) -> int:
    """Number of blocks of `tree` under `blocking` (no call order needed)."""
    check(blocking, "param_blocks.count")
    return 2 if blocking == "last_layer" else assign(tree, blocking)[1]
