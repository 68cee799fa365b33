"""`cr_mogm`: α = 1 is the inner method; otherwise an EMA of the inner weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._base import GRAMIAN, Weighting
from mtl_jax.weighting._cr_mogm import cr_mogm

KEY = jax.random.PRNGKey(0)
NAMES = ("a", "b", "c")
STEPS = 6


def _gramians(seed, steps=STEPS, num_tasks=3, dim=10):
    """Random Gramians of conflicting gradients (a shared component, random scales)."""
    rng = np.random.default_rng(seed)
    grams = []
    for _ in range(steps):
        jac = rng.normal(size=(num_tasks, dim)) + rng.normal(size=(1, dim)) * rng.random()
        jac *= 10.0 ** rng.uniform(-1, 1, size=(num_tasks, 1))
        grams.append(jnp.asarray(jac @ jac.T, jnp.float32))
    losses = [jnp.asarray(rng.uniform(0.5, 2.0, size=num_tasks), jnp.float32) for _ in grams]
    return grams, losses


def _run(method, grams, losses, keys=None):
    """Weights, metrics and the final state of `method` over the sequence (jitted)."""
    update = jax.jit(method.update)
    state = method.init(NAMES)
    weights, metrics = [], []
    for i, (gram, loss) in enumerate(zip(grams, losses, strict=True)):
        key = None if keys is None else keys[i]
        w, state, m = update(loss, state, key=key, gramian=gram)
        weights.append(np.asarray(w))
        metrics.append(m)
    return weights, metrics, state


INNERS = {
    "mgda": {},
    "imtl": {"learning_rate": 0.1},  # learned loss scales: a stateful inner method
    "nash_mtl": {"update_every": 2},  # reuses its weights every other step
}


@pytest.mark.parametrize("inner", sorted(INNERS))
def test_alpha_one_is_the_inner_method(inner):
    grams, losses = _gramians(1)
    alone = weighting.create(inner, **INNERS[inner])
    wrapped = cr_mogm(inner=inner, alpha=1.0, inner_kwargs=INNERS[inner])
    expected, expected_metrics, expected_state = _run(alone, grams, losses)
    got, got_metrics, got_state = _run(wrapped, grams, losses)
    for step in range(STEPS):
        np.testing.assert_array_equal(got[step], expected[step], err_msg=f"step {step}")
        np.testing.assert_array_equal(got_metrics[step]["inner_weights"], expected[step])
        for name, value in expected_metrics[step].items():
            np.testing.assert_array_equal(got_metrics[step][name], value, err_msg=name)
    for a, b in zip(jax.tree.leaves(got_state.inner), jax.tree.leaves(expected_state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(got_state.step) == STEPS


def test_alpha_one_with_a_built_inner_and_a_stochastic_inner_gets_the_key():
    grams, losses = _gramians(2)
    keys = [jax.random.fold_in(KEY, i) for i in range(STEPS)]
    alone = weighting.pcgrad()
    wrapped = cr_mogm(inner=alone, alpha=1.0)
    assert wrapped.stochastic and wrapped.kind == GRAMIAN
    expected, _, _ = _run(alone, grams, losses, keys)
    got, _, _ = _run(wrapped, grams, losses, keys)
    for step in range(STEPS):
        np.testing.assert_array_equal(got[step], expected[step], err_msg=f"step {step}")
    # The draws are the run's: other keys, other projection orders somewhere.
    others, _, _ = _run(wrapped, grams, losses, [jax.random.fold_in(keys[i], 1) for i in range(6)])
    assert any(not np.array_equal(a, b) for a, b in zip(got, others, strict=True))
    assert not cr_mogm(inner="mgda").stochastic


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("inner", ["imtl_g", "mgda", "nash_mtl"])
def test_ema_recursion_matches_numpy(inner, alpha):
    grams, losses = _gramians(3, steps=10, num_tasks=4)
    names4 = ("a", "b", "c", "d")
    alone = weighting.create(inner)
    update = jax.jit(alone.update)
    state = alone.init(names4)
    raw = []
    for gram, loss in zip(grams, losses, strict=True):
        w, state, _ = update(loss, state, key=None, gramian=gram)
        raw.append(np.asarray(w, np.float64))
    # λ_0 = λ̂_0, then λ_k = (1 − α) λ_{k−1} + α λ̂_k.
    expected = [raw[0]]
    for k in range(1, len(raw)):
        expected.append((1 - alpha) * expected[-1] + alpha * raw[k])
    method = cr_mogm(inner=inner, alpha=alpha)
    wrapped_update = jax.jit(method.update)
    state = method.init(names4)
    for k, (gram, loss) in enumerate(zip(grams, losses, strict=True)):
        w, state, metrics = wrapped_update(loss, state, key=None, gramian=gram)
        np.testing.assert_allclose(metrics["inner_weights"], raw[k], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(w, expected[k], rtol=1e-5, atol=1e-7, err_msg=f"step {k}")
        np.testing.assert_array_equal(state.weights, w)


def test_smoothing_damps_the_weights_of_alternating_gramians():
    """Gramians alternating between two tasks' dominance: MGDA's weights flip every step,
    the smoothed ones move by α times as much."""
    grams = [jnp.diag(jnp.asarray(d, jnp.float32)) for d in ([1.0, 4.0], [4.0, 1.0])] * 4
    raw, _, _ = _run_two(weighting.mgda(normalization="none"), grams)
    smooth, _, _ = _run_two(cr_mogm(inner=weighting.mgda(normalization="none"), alpha=0.2), grams)
    raw_moves = np.abs(np.diff(np.asarray(raw), axis=0))
    smooth_moves = np.abs(np.diff(np.asarray(smooth), axis=0))
    np.testing.assert_allclose(
        smooth_moves, 0.2 * np.abs(np.asarray(raw)[1:] - smooth[:-1]), rtol=1e-5, atol=1e-7
    )
    assert np.all(smooth_moves < raw_moves)
    np.testing.assert_allclose(np.sum(smooth, axis=1), 1.0, rtol=1e-6)  # stays on Δ


def _run_two(method, grams):
    update = jax.jit(method.update)
    state = method.init(("a", "b"))
    weights = []
    for gram in grams:
        w, state, metrics = update(None, state, key=None, gramian=gram)
        weights.append(np.asarray(w))
    return weights, metrics, state


def test_blocked_inner_smooths_per_block_weights():
    row = {
        "dense": {"kernel": jax.ShapeDtypeStruct((4, 3), jnp.float32)},
        "out": {"kernel": jax.ShapeDtypeStruct((3,), jnp.float32)},
    }
    method = cr_mogm(inner="gradvac", alpha=1.0, inner_kwargs={"blocks": "tensor"})
    alone = weighting.gradvac(blocks="tensor")
    assert method.blocks == "tensor" and method.needs_row
    state = method.init_for(NAMES, row)
    assert state.weights.shape == (2, 3)
    rng = np.random.default_rng(5)
    alone_state = alone.init_for(NAMES, row)
    for i in range(3):
        jac = rng.normal(size=(2, 3, 6))
        gram = jnp.asarray(np.einsum("btp,bsp->bts", jac, jac), jnp.float32)
        key = jax.random.fold_in(KEY, i)
        w, state, _ = method.update(None, state, key=key, gramian=gram)
        expected, alone_state, _ = alone.update(None, alone_state, key=key, gramian=gram)
        np.testing.assert_array_equal(w, expected)
    with pytest.raises(ValueError, match="needs the gradient shape"):
        method.init_for(NAMES)


def test_inner_after_update_hook_runs_on_the_inner_state():
    def init(task_names):
        return jnp.zeros((), jnp.int32)

    def update(losses, state, *, key, gramian=None, rows=None):
        return jnp.full(gramian.shape[:1], 1.0) / gramian.shape[0], state, {}

    def after_update(before, after, state):
        return state + 1, {"seen": jnp.sum(after)}

    inner = Weighting(init=init, update=update, kind=GRAMIAN, after_update=after_update)
    method = cr_mogm(inner=inner)
    state = method.init(NAMES)
    _, state, _ = method.update(None, state, key=None, gramian=jnp.eye(3))
    state, metrics = method.after_update(jnp.ones(3), jnp.ones(3), state)
    assert int(state.inner) == 1 and float(metrics["seen"]) == 3.0
    assert cr_mogm(inner="mgda").after_update is None


@pytest.mark.parametrize("inner", ["equal", "uncertainty", "graddrop", "trimmed_mean"])
def test_non_gramian_inner_is_rejected(inner):
    with pytest.raises(ValueError, match=r"cr_mogm: option inner must be a gramian-kind"):
        cr_mogm(inner=inner)
    with pytest.raises(ValueError, match=r"is (loss|jacobian)-kind"):
        weighting.create("cr_mogm", inner=inner)


def test_bad_inner_is_rejected():
    with pytest.raises(ValueError, match=r"option inner='mgd'.*did you mean 'mgda'"):
        cr_mogm(inner="mgd")
    with pytest.raises(
        ValueError, match=r"option inner='mgda'.*no option\(s\) \['normalisation'\]"
    ):
        cr_mogm(inner="mgda", inner_kwargs={"normalisation": "none"})
    with pytest.raises(ValueError, match="inner_kwargs are for an inner method given by name"):
        cr_mogm(inner=weighting.mgda(), inner_kwargs={"normalization": "none"})
    with pytest.raises(ValueError, match="inner must be a method name or a Weighting"):
        cr_mogm(inner=3)
    with pytest.raises(ValueError, match="inner_kwargs must be a mapping"):
        cr_mogm(inner="mgda", inner_kwargs=[("normalization", "none")])


@pytest.mark.parametrize("alpha", [0.0, -0.5, 1.5, float("nan"), float("inf"), True, "0.5", None])
def test_bad_alpha_is_rejected(alpha):
    with pytest.raises(ValueError, match=r"cr_mogm: alpha must be a number in \(0, 1\]"):
        cr_mogm(alpha=alpha)


def test_built_from_config_options():
    """What `--config.weighting.kwargs.inner=nash_mtl --config.weighting.kwargs.inner_kwargs.
    max_norm=0.0` hands `create`."""
    method = weighting.create(
        "cr_mogm", inner="nash_mtl", alpha=0.25, inner_kwargs={"max_norm": 0.0}
    )
    gram = jnp.diag(jnp.asarray([1.0, 4.0]))
    weights, state, metrics = method.update(None, method.init(("a", "b")), key=None, gramian=gram)
    np.testing.assert_allclose(weights, [1.0, 0.5], rtol=1e-5)  # nash_mtl's doctest
    assert {"solver_iterations", "solver_residual", "direction_norm", "inner_weights"} <= set(
        metrics
    )


def test_uniform_start_smooths_from_one_over_t():
    """`start="uniform"` (torchjd's prior): the first weights are `(1 − α)/T + α λ̂_0`."""
    method = cr_mogm(inner="imtl_g", alpha=0.25, start="uniform")
    inner = weighting.create("imtl_g")
    gram = jnp.array([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]])
    state, inner_state = method.init(("a", "b", "c")), inner.init(("a", "b", "c"))
    weights, state, _ = method.update(None, state, key=None, gramian=gram)
    expected, _, _ = inner.update(None, inner_state, key=None, gramian=gram)
    np.testing.assert_allclose(weights, 0.75 / 3 + 0.25 * np.asarray(expected), rtol=1e-6)
    second, _, _ = method.update(None, state, key=None, gramian=gram)
    np.testing.assert_allclose(second, 0.75 * weights + 0.25 * np.asarray(expected), rtol=1e-6)


def test_bad_start_names_the_option():
    with pytest.raises(ValueError, match="start must be"):
        cr_mogm(start="zeros")
