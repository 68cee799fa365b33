"""Multi-batch methods (`Weighting.batches` > 1): SDMGrad and MoDo's defining properties,
the train step's k-batch protocol (cross-Gramian of batches 0 and 1, update from the last
batch's rows, heads' mean gradient), option errors, and exact resume from the CLI."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import jacobian, row_math, weighting
from mtl_jax.errors import OptionError
from mtl_jax.train import create_train_state, make_train_step
from mtl_jax.weighting._simplex import project_onto_simplex
from tests.cli import assert_bitwise_equal_runs, compile_cache, run_cli
from tests.helpers import grad_recorder, multi_mnist_setup, relative_error
from tests.test_resume import AT_STEP

RNG = np.random.default_rng(0)
# Three conflicting task gradients in 5 dimensions.
ROWS = jnp.asarray(RNG.normal(size=(3, 5)) + np.array([[1.0], [0.0], [-0.5]]), jnp.float32)
GRAM = ROWS @ ROWS.T


def mgda_weights(gram):
    return weighting.min_norm_simplex(gram, max_iters=2000, tol=1e-9).weights


def run_updates(method, gram, steps):
    state = method.init(("a", "b", "c"))
    for _ in range(steps):
        weights, state, metrics = method.update(None, state, key=None, gramian=gram)
    return weights, metrics


def test_simplex_projection_matches_bisection_on_the_threshold():
    """`Π_Δ(v) = max(v − θ, 0)` with `Σ max(v − θ, 0) = 1`: θ found by bisection (float64)."""
    for _ in range(20):
        v = RNG.normal(scale=2.0, size=4)
        low, high = v.min() - 1.0, v.max()
        for _ in range(200):
            mid = (low + high) / 2
            low, high = (mid, high) if np.maximum(v - mid, 0).sum() > 1 else (low, mid)
        want = np.maximum(v - (low + high) / 2, 0)
        np.testing.assert_allclose(project_onto_simplex(jnp.asarray(v)), want, atol=1e-6)


def test_sdmgrad_large_omega_gives_equal_weights():
    weights, _ = run_updates(weighting.sdmgrad(omega=1e6), GRAM, 3)
    np.testing.assert_allclose(weights, np.full(3, 1 / 3), atol=1e-5)


def test_sdmgrad_omega_zero_on_a_fixed_batch_converges_to_mgda():
    weights, _ = run_updates(weighting.sdmgrad(omega=0.0, iterations=100, lr=0.2), GRAM, 20)
    np.testing.assert_allclose(weights, mgda_weights(GRAM), atol=2e-3)


def test_modo_on_a_fixed_batch_converges_to_mgda():
    weights, metrics = run_updates(weighting.modo(gamma=0.02, rho=0.0), GRAM, 3000)
    np.testing.assert_allclose(weights, mgda_weights(GRAM), atol=2e-3)
    assert float(metrics["weight_step"]) < 1e-5


def test_modo_and_sdmgrad_use_the_cross_gramian_as_given():
    """Double sampling: `G = J_0 J_1ᵀ` is not symmetric; MoDo steps with `G λ`."""
    other = ROWS + jnp.asarray(RNG.normal(scale=0.3, size=ROWS.shape), jnp.float32)
    cross = ROWS @ other.T
    method = weighting.modo(gamma=0.05, rho=0.1)
    state = method.init(("a", "b", "c"))
    weights, _, _ = method.update(None, state, key=None, gramian=cross)
    want = project_onto_simplex(
        state.weights - 0.05 * (cross @ state.weights + 0.1 * state.weights)
    )
    np.testing.assert_allclose(weights, want, rtol=1e-6)
    assert weighting.sdmgrad().batches == weighting.modo().batches == 3


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: weighting.sdmgrad(omega=-1.0), "omega"),
        (lambda: weighting.sdmgrad(iterations=0), "iterations"),
        (lambda: weighting.sdmgrad(momentum=1.0), "momentum"),
        (lambda: weighting.modo(gamma=0.0), "gamma"),
        (lambda: weighting.modo(rho=-0.1), "rho"),
    ],
)
def test_bad_options_name_the_option(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def recording_method():
    """A 3-batch gramian method that returns fixed weights and records its Gramian."""
    weights = jnp.asarray([0.5, 0.3, 0.2])

    def update(losses, state, *, key, gramian=None, rows=None):
        del key, rows
        return weights, state, {"gramian": gramian, "losses": losses}

    return weighting.Weighting(
        init=lambda names: (), update=update, kind=weighting.GRAMIAN, batches=3
    )


def test_step_uses_batches_0_and_1_for_the_gramian_and_the_last_for_the_update():
    tasks, model, variables, _ = multi_mnist_setup()
    batches = {str(i): multi_mnist_setup(seed=i + 1)[3] for i in range(3)}
    method = recording_method()
    state = create_train_state(model, grad_recorder(), method, batches["0"]["image"], seed=0)
    state = state._replace(params=variables["params"], batch_stats=variables["batch_stats"])
    # Not donated: `variables` stays readable for the reference below.
    step = jax.jit(make_train_step(model, tasks, grad_recorder(), method, jit=False))
    new_state, metrics = step(state, batches)

    def pullbacks_of(batch):
        return jacobian.forward_with_pullbacks(
            model, tasks, variables["params"], variables["batch_stats"], batch, train=True
        )

    pulls = [pullbacks_of(batches[str(i)]) for i in range(3)]
    rows = [jacobian.shared_jacobian(p) for p in pulls]
    cross = row_math.cross_gramian(rows[0], rows[1])
    assert relative_error(metrics["weighting/gramian"], cross) < 1e-5
    assert relative_error(cross, cross.T) > 1e-3  # different batches: not symmetric
    mean_losses = np.mean([np.asarray(p.losses) for p in pulls], axis=0)
    np.testing.assert_allclose(metrics["loss"], mean_losses, rtol=1e-6)
    np.testing.assert_allclose(metrics["weighting/losses"], mean_losses, rtol=1e-6)
    # The optimizer saw Σ_t w_t g_t of batch 2 and each head's mean over the 3 batches.
    grads = new_state.opt_state
    want = row_math.combine(jnp.asarray([0.5, 0.3, 0.2]), rows[2])
    got, ref = jax.tree.leaves(grads["shared"]), jax.tree.leaves(want)
    for g, r in zip(got, ref, strict=True):
        assert relative_error(g, r) < 1e-5
    head_mean = jax.tree.map(lambda *g: sum(g) / 3, *(p.head_grads for p in pulls))
    for g, r in zip(jax.tree.leaves(grads["tasks"]), jax.tree.leaves(head_mean), strict=True):
        assert relative_error(g, r) < 1e-5


def test_multi_batch_errors():
    tasks, model, variables, batch = multi_mnist_setup()
    method = weighting.modo()
    with pytest.raises(OptionError, match="parameter mode"):
        make_train_step(model, tasks, grad_recorder(), method, rep_grad=True)
    state = create_train_state(model, grad_recorder(), method, batch["image"], seed=0)
    step = make_train_step(model, tasks, grad_recorder(), method, jit=False)
    with pytest.raises(ValueError, match=r"3-batch method takes a batch \{'0'"):
        step(state, batch)
    bad = weighting.Weighting(init=lambda names: (), update=None, kind=weighting.LOSS, batches=2)
    with pytest.raises(OptionError, match="multi-batch methods are gramian-kind"):
        make_train_step(model, tasks, grad_recorder(), bad)


@pytest.mark.slow  # about 40 s: three CLI runs
def test_modo_run_killed_and_resumed_is_bitwise_equal(tmp_path_factory, tiny_multi_mnist, data_dir):
    """Three batches per step: the iterator's checkpointed position is 3 × steps."""
    cache = compile_cache(tmp_path_factory)
    args = (
        "--config.weighting.name=modo",
        "--config.num_steps=8",
        "--config.checkpoint_every_steps=4",
    )
    reference = tmp_path_factory.mktemp("modo") / "run"
    done = run_cli(reference, *args, data_dir=data_dir, cache_dir=cache)
    assert done.returncode == 0, done.stderr[-3000:]
    workdir = tmp_path_factory.mktemp("modo_killed") / "run"
    hook = AT_STEP.format(step=6, action="os.kill(os.getpid(), signal.SIGKILL)")
    killed = run_cli(workdir, *args, data_dir=data_dir, cache_dir=cache, hook=hook)
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli(workdir, *args, data_dir=data_dir, cache_dir=cache)
    assert resumed.returncode == 0 and "checkpoints/4" in resumed.stderr, resumed.stderr[-3000:]
    assert_bitwise_equal_runs(reference, workdir, 8)
