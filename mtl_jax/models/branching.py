"""Learning to Branch (Guo, Lee & Ulbricht, ICML 2020), as in LibMTL's `LTB`.

One column per task, each a copy of the trunk cut into L blocks (`mtl_jax.models.stages`).
Between block b−1 and block b (b = 1 … L−1) every child node, column c's block b, picks
one parent, some column's block b−1, from a learned categorical distribution with logits
α_b[c, ·] (Sec. 3): its input is `Σ_p d_cp h_p` for a one-hot d. The choice is learnt
through the Gumbel-softmax (straight-through) estimator; once learnt, the choices form a
tree: columns that pick the same parents share those layers.

Randomness and modes:

* training (`train=True`): `d = onehot(argmax(α + g))` in the forward pass, g ~ Gumbel(0, 1)
  drawn from the model's rng (the flax stream `SAMPLE_STREAM`, which `MultiTaskModel`
  fills from the `rng` of `apply` / `apply_shared` / `apply_head`; so a step's key decides
  the sampled tree and nothing is seeded inside the module); the gradient is that of
  `softmax((α + g) / τ)`. Training without an rng is an error.
* evaluation (`train=False`): deterministic, the most probable tree, `d = onehot(argmax α)`
  (ties go to the lowest column: at initialisation, α = 1 everywhere as in LibMTL, every
  task reads column 0, i.e. the fully shared tree).

Not reproduced from LibMTL: its schedule over epochs, a warm-up for the first 1% of
epochs with d = 1 for every parent (the children read the *sum* of all parents) and then a
temperature τ = (epochs / 20) / √(epoch + 1). A forward here does not know the epoch; τ is
fixed (`temperature`). With hard samples τ only scales the gradient of α. LibMTL also
samples at evaluation; this module evaluates the argmax tree.

Split ("shared" = used by every task): any column's blocks 0 … L−2 and the branching
points 1 … L−2 can feed every task, so they are the trunk. Branching point L−1's row
α_{L−1}[t, ·] (task t's choice of parent for its last block), column t's last block and
task t's tower feed task t alone: its head::

    params["shared"]   = {"column_{c}": {"block_0", …, "block_{L-2}"}, "branch_1", …}
    params["tasks"][t] = {"branch": [P], "block", "tower"}

The representation is the stacked outputs of the columns' block L−2, [T, B, ...]. L ≥ 2:
with one block the columns would never branch.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.layers import Dtype

# The flax rng stream the Gumbel noise is drawn from: the one `MultiTaskModel` passes its
# `rng` as (the same stream dropout uses; flax folds in each module's path, so the draws
# are independent of any dropout mask).
SAMPLE_STREAM = "dropout"


def branch_weights(
    logits: jax.Array, *, temperature: float = 1.0, key: jax.Array | None = None
) -> jax.Array:
    """One-hot choices of a parent, [..., P] from logits [..., P] (one row per child).

    With `key`, a straight-through Gumbel-softmax sample: forward `onehot(argmax(α + g))`,
    gradient of `softmax((α + g) / temperature)`. Without, `onehot(argmax(α))`.
    """
    logits = logits.astype(jnp.float32)
    if key is None:
        return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1])
    soft = jax.nn.softmax((logits + jax.random.gumbel(key, logits.shape)) / temperature, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1])
    return hard + soft - jax.lax.stop_gradient(soft)


def _mix(weights: jax.Array, stacked: jax.Array) -> jax.Array:
    """`[C, P] x [P, B, ...] -> [C, B, ...]`: each child's chosen parent."""
    return jnp.einsum("cp,pb...->cb...", weights.astype(stacked.dtype), stacked)


def _ones(shape):
    # LibMTL starts every α at 1: uniform branching probabilities.
    return lambda _: jnp.ones(shape, jnp.float32)


class Column(nn.Module):
    """One task's column: block b is `blocks[b]`'s copy `block_{b}`, run by `column(b, x)`."""

    blocks: tuple[nn.Module, ...]

    @nn.compact
    def __call__(self, index: int, x, *, train: bool = True):
        return self.blocks[index].clone(parent=self, name=f"block_{index}")(x, train=train)


class BranchingTrunk(nn.Module):
    """The shared part of Learning to Branch: blocks 0 … L−2 of T columns and branching
    points 1 … L−2 (α_b [T, T], row = child column, column = parent).

    Attributes:
      blocks: the templates of blocks 0 … L−2 (at least one).
      num_tasks: T.
      temperature: τ of the Gumbel-softmax gradient.
      dtype: computation dtype.

    Returns:
      [T, B, ...], the columns' block-(L−2) outputs in sorted task order.
    """

    blocks: tuple[nn.Module, ...]
    num_tasks: int
    temperature: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        if not self.blocks:
            raise ValueError("Learning to Branch needs at least two blocks")
        columns = [Column(self.blocks, name=f"column_{c}") for c in range(self.num_tasks)]
        feats = [column(0, x, train=train) for column in columns]
        for index in range(1, len(self.blocks)):
            alpha = self.param(f"branch_{index}", _ones((self.num_tasks, self.num_tasks)))
            key = self.make_rng(SAMPLE_STREAM) if train else None
            weights = branch_weights(alpha, temperature=self.temperature, key=key)
            children = _mix(weights, jnp.stack(feats))
            feats = [column(index, children[c], train=train) for c, column in enumerate(columns)]
        return jnp.stack(feats)


class BranchingHead(nn.Module):
    """Task t's part of Learning to Branch: its choice of parent at the last branching
    point (`branch`, α row [T]), its column's last block and its tower.

    Attributes:
      tower: the task's head on its last block's output.
      last_block: the template of the last block (its copy is `block`).
      temperature: τ of the Gumbel-softmax gradient.
    """

    tower: nn.Module
    last_block: nn.Module
    temperature: float = 1.0

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        alpha = self.param("branch", _ones((rep.shape[0],)))
        key = self.make_rng(SAMPLE_STREAM) if train else None
        weights = branch_weights(alpha[None], temperature=self.temperature, key=key)
        x = _mix(weights, rep)[0]
        x = self.last_block.clone(parent=self, name="block")(x, train=train)
        return self.tower(x, train=train)
