"""Small models and batches for tests (no dataset needed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax.data import multi_mnist
from mtl_jax.models import build_model


def multi_mnist_setup(trunk: str = "lenet", batch_size: int = 16, seed: int = 0):
    """(tasks, model, variables, batch) for MultiMNIST-shaped random data."""
    tasks = multi_mnist.tasks()
    model = build_model(trunk, tasks, head_hidden=(50,), dense_head_hidden=8)
    rng = np.random.default_rng(seed)
    channels = 3 if trunk.startswith("small_resnet") else 1
    batch = {
        "image": jnp.asarray(rng.random((batch_size, 28, 28, channels)), jnp.float32),
        "targets": {
            "left": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32),
            "right": jnp.asarray(rng.integers(0, 10, batch_size), jnp.int32),
            "boundary": jnp.asarray(rng.random((batch_size, 28, 28)) < 0.2, jnp.uint8),
        },
    }
    variables = model.init(jax.random.PRNGKey(seed), batch["image"])
    return tasks, model, variables, batch


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def grad_recorder() -> optax.GradientTransformation:
    """An 'optimizer' that keeps the last gradients in its state and changes nothing."""
    return optax.GradientTransformation(
        init=lambda params: jax.tree.map(jnp.zeros_like, params),
        update=lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads),
    )
