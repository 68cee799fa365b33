"""`stch`: log-loss warm-up, then weights = T·softmax of scaled log-excess losses / L."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting


def _run(method, loss_rows):
    update = jax.jit(method.update)
    state = method.init(weighting.default_task_names(len(loss_rows[0])))
    out = []
    for losses in loss_rows:
        weights, state, _ = update(jnp.asarray(losses, jnp.float32), state, key=None)
        out.append(np.asarray(weights))
    return np.stack(out), state


def test_warmup_is_log_loss_and_records_the_nadir():
    rng = np.random.default_rng(0)
    steps_per_epoch, warmup_epochs = 3, 2
    rows = rng.uniform(0.1, 5.0, ((warmup_epochs + 1) * steps_per_epoch, 4)).astype(np.float32)
    method = weighting.stch(steps_per_epoch=steps_per_epoch, warmup_epochs=warmup_epochs)
    weights, state = _run(method, rows)
    # warmup_epochs + 1 epochs of Σ log L_t (LibMTL's convention) ...
    np.testing.assert_allclose(weights, 1.0 / rows, rtol=1e-6)
    # ... the last of which is averaged into n.
    np.testing.assert_allclose(state.nadir, rows[-steps_per_epoch:].mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("mu", [0.1, 1.0, 3.0])
def test_weights_are_softmax_of_scaled_excess_losses(mu):
    rng = np.random.default_rng(1)
    num_tasks = 4
    rows = rng.uniform(0.5, 2.0, (2, num_tasks)).astype(np.float32)
    method = weighting.stch(steps_per_epoch=2, warmup_epochs=0, mu=mu)
    _, state = _run(method, rows)
    nadir = rows.mean(axis=0)
    losses = jnp.asarray(rng.uniform(0.1, 3.0, num_tasks), jnp.float32)
    weights, _, metrics = method.update(losses, state, key=None)
    excess = np.log(np.asarray(losses)) - np.log(nadir)
    expected = np.exp(excess / mu) / np.sum(np.exp(excess / mu))
    np.testing.assert_allclose(weights * losses / num_tasks, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["log_excess"], excess, rtol=1e-5, atol=1e-6)
    assert float(metrics["warmup"]) == 0.0
    # The same weights by autodiff of the authors' objective T·μ·log Σ exp(log(L/n)/μ).
    objective = lambda x: num_tasks * mu * jax.nn.logsumexp(jnp.log(x / nadir) / mu)
    np.testing.assert_allclose(weights, jax.grad(objective)(losses), rtol=1e-5)


def test_small_mu_weights_the_worst_task():
    method = weighting.stch(steps_per_epoch=1, warmup_epochs=0, mu=0.01)
    _, state = _run(method, [[1.0, 1.0, 1.0]])
    losses = jnp.asarray([0.5, 1.3, 1.1])  # task 1 is furthest above its nadir
    weights, _, _ = method.update(losses, state, key=None)
    np.testing.assert_allclose(weights * losses / 3, [0.0, 1.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"steps_per_epoch": -1}, "steps_per_epoch"),
        ({"steps_per_epoch": True}, "steps_per_epoch"),
        ({"steps_per_epoch": 5, "mu": 0.0}, "mu"),
        ({"steps_per_epoch": 5, "warmup_epochs": -1}, "warmup_epochs"),
        ({"steps_per_epoch": 5, "warmup_epochs": 1.0}, "warmup_epochs"),
        ({"steps_per_epoch": 5, "eps": 0.0}, "eps"),
    ],
)
def test_bad_options(options, name):
    with pytest.raises(ValueError, match=name):
        weighting.stch(**options)
