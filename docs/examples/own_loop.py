"""Task weighting in your own training loop (the guide "Using aggregate in your own loop").

A shared trunk and one head per task, written as plain Flax modules. Each step takes the
per-task gradients of the trunk with `jax.jacrev` (a [T, P] matrix), combines them with
`mtl_jax.weighting.aggregate`, gives every head its own loss gradient and applies optax.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from mtl_jax import weighting

TASKS = ("product", "sine")  # sorted: the order of every [T] vector below


class Trunk(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.tanh(nn.Dense(32)(nn.tanh(nn.Dense(32)(x))))


class Head(nn.Module):
    @nn.compact
    def __call__(self, h):
        return nn.Dense(1)(h)[:, 0]


# Two regression tasks on the same inputs, with targets of very different scales.
data_key, init_key, *head_keys = jax.random.split(jax.random.PRNGKey(0), 2 + len(TASKS))
x = jax.random.normal(data_key, (512, 4))
targets = {"product": 5.0 * x[:, 1] * x[:, 2], "sine": jnp.sin(2.0 * x[:, 0])}

trunk, head = Trunk(), Head()
trunk_params = trunk.init(init_key, x)
shared, unravel = ravel_pytree(trunk_params)  # the trunk as one vector of P parameters
features = trunk.apply(trunk_params, x)
params = {
    "shared": shared,
    "tasks": {name: head.init(k, features) for name, k in zip(TASKS, head_keys, strict=True)},
}


def task_losses(shared, heads):
    """[T] mean squared errors, in `TASKS` order; also returned as the aux output."""
    h = trunk.apply(unravel(shared), x)
    losses = jnp.stack([jnp.mean((head.apply(heads[t], h) - targets[t]) ** 2) for t in TASKS])
    return losses, losses


method = weighting.create("upgrad")  # any name of weighting.METHODS, or "pkg.mod:factory"
tx = optax.adam(3e-3)
seed = 0


@jax.jit
def train_step(params, opt_state, method_state, step):
    # Row t of `jac_shared` is ∂L_t/∂shared; `jac_heads` has a leading task axis too.
    (jac_shared, jac_heads), losses = jax.jacrev(task_losses, argnums=(0, 1), has_aux=True)(
        params["shared"], params["tasks"]
    )
    # A key per step, from the run's seed: only stochastic methods read it.
    key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    direction, weights, method_state = weighting.aggregate(
        method, jac_shared, losses=losses, state=method_state, key=key
    )
    # Head t only changes loss t: summing its rows over tasks gives its own gradient.
    head_grads = jax.tree.map(lambda g: g.sum(axis=0), jac_heads)
    grads = {"shared": direction, "tasks": head_grads}
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, method_state, losses, weights


opt_state = tx.init(params)
method_state = method.init(TASKS)
first_losses = None
for step in range(300):
    params, opt_state, method_state, losses, weights = train_step(
        params, opt_state, method_state, step
    )
    if first_losses is None:
        first_losses = losses
    if step % 100 == 0 or step == 299:
        shown = "  ".join(
            f"{t}: loss {float(loss):.4f} weight {float(w):.3f}"
            for t, loss, w in zip(TASKS, losses, weights, strict=True)
        )
        print(f"step {step:3d}  {shown}")
