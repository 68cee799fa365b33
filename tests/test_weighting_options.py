"""Options shared with torchjd and LibMTL, each against its defining behaviour.

`pref_vector` (upgrad, dualproj, config, aligned_mtl), `aligned_mtl(scale_mode=...)`,
per-task `graddrop(leak=...)`, `excess_mtl(n_warmup_steps=...)` and
`upgrad(normalize_rows=...)`: defaults give the numbers from before the option, the
references are NumPy transcriptions of the torchjd / LibMTL code the docstrings cite, and
every option is reachable from the command line.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.config import ConfigError, load_config
from mtl_jax.experiment import build_experiment
from tests.banks import jacobian_bank

TEST_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "test.py"
EPS32 = float(np.finfo(np.float32).eps)

# The preference each method uses by default (T = 4): torchjd's mean for the dual-cone
# methods, ones for ConFIG (torchjd's SumWeighting) and for aligned_mtl (LibMTL's sum).
PREF_METHODS = {"upgrad": 0.25, "dualproj": 0.25, "config": 1.0, "aligned_mtl": 1.0}


def orthogonal_rows(norms, num_params=6, seed=0):
    """Rows `norms_t q_t` with orthonormal `q_t`: no two tasks conflict."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(num_params, len(norms))))
    return (q.T * np.asarray(norms)[:, None]).astype(np.float32)


# --- pref_vector -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PREF_METHODS))
@pytest.mark.parametrize("case", ["random4", "conflicting4"])
def test_default_pref_vector_given_explicitly_is_the_default(name, case):
    jac = jacobian_bank()["random4"]
    if case == "conflicting4":  # pairs of conflicting rows: the projections are active
        jac = jac * np.array([1.0, -1.0, 1.0, -1.0])[:, None] + 0.1 * jac[::-1]
    jac = jnp.asarray(jac)
    factory = getattr(weighting, name)
    explicit = factory(pref_vector=(PREF_METHODS[name],) * 4)
    direction, weights, _ = weighting.aggregate(factory(), jac)
    direction_p, weights_p, _ = weighting.aggregate(explicit, jac)
    if name == "config":  # Vᵀ1 is a sum by default and a matrix product with p: round-off
        np.testing.assert_allclose(weights_p, weights, rtol=1e-5, atol=1e-7)
    else:
        np.testing.assert_array_equal(weights_p, weights)
        np.testing.assert_array_equal(direction_p, direction)


@pytest.mark.parametrize("name", sorted(PREF_METHODS))
@pytest.mark.parametrize("task", [0, 1, 2])
def test_one_hot_pref_vector_on_orthogonal_rows_gives_that_task(name, task):
    norms = np.array([3.0, 0.5, 1.5])
    jac = orthogonal_rows(norms)
    pref = tuple(float(t == task) for t in range(3))
    method = getattr(weighting, name)(pref_vector=pref)
    direction, _, _ = weighting.aggregate(method, jnp.asarray(jac))
    direction = np.asarray(direction, np.float64)
    cos = direction @ jac[task] / (np.linalg.norm(direction) * norms[task])
    np.testing.assert_allclose(cos, 1.0, rtol=1e-5)
    # upgrad/dualproj (no conflict: w = p) and ConFIG (length Σ_t g_t·ĝ = ‖g_k‖) give g_k
    # itself; aligned_mtl gives the aligned row, of length √λ_min = the smallest norm.
    length = norms.min() if name == "aligned_mtl" else norms[task]
    np.testing.assert_allclose(np.linalg.norm(direction), length, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(PREF_METHODS))
def test_pref_vector_is_not_normalised_except_by_config(name):
    """torchjd hands pref_vector to a ConstantWeighting as is: scaling p scales the update
    of upgrad, dualproj and aligned_mtl; ConFIG normalises its direction."""
    jac = jnp.asarray(jacobian_bank()["conflicting"])
    factory = getattr(weighting, name)
    pref = (0.2, 0.5, 0.3)
    _, weights, _ = weighting.aggregate(factory(pref_vector=pref), jac)
    _, doubled, _ = weighting.aggregate(factory(pref_vector=tuple(2 * p for p in pref)), jac)
    factor = 1.0 if name == "config" else 2.0
    np.testing.assert_allclose(doubled, factor * np.asarray(weights), rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PREF_METHODS))
@pytest.mark.parametrize(
    "pref", [[[0.5, 0.5], [0.5, 0.5]], (1.0, -0.1, 0.5), (0.0, 0.0, 0.0), (1.0, None, 0.5)]
)
def test_bad_pref_vector_names_the_option(name, pref):
    with pytest.raises(ValueError, match=rf"^{name}: pref_vector"):
        getattr(weighting, name)(pref_vector=pref)


@pytest.mark.parametrize("name", sorted(PREF_METHODS))
def test_pref_vector_length_is_checked(name):
    method = getattr(weighting, name)(pref_vector=(0.5, 0.5))
    with pytest.raises(ValueError, match=rf"{name}: pref_vector has 2 entries but there are 3"):
        method.init(weighting.default_task_names(3))


# --- aligned_mtl(scale_mode=...) ---------------------------------------------------------


def libmtl_aligned_weights(jac, scale_mode, pref):
    """LibMTL's `Aligned_MTL.backward` (scale `lmbda[-1]`, `alpha = B.sum(0)`) with torchjd's
    `_compute_balance_transformation` scale modes, transcribed to NumPy (float64)."""
    jac = np.asarray(jac, np.float64)
    gram = jac @ jac.T
    lmbda, v = np.linalg.eigh(gram)
    tol = np.max(lmbda) * max(gram.shape) * EPS32
    rank = int(np.sum(lmbda > tol))
    order = np.argsort(lmbda)[::-1]
    lmbda, v = lmbda[order][:rank], v[:, order][:, :rank]
    sigma = np.diag(1 / np.sqrt(lmbda))
    scale = {
        "min": lmbda[-1],
        "median": np.sort(lmbda)[(rank - 1) // 2],  # torch.median: the lower middle one
        "rmse": lmbda.mean(),
    }[scale_mode]
    balance = np.sqrt(scale) * (v @ sigma) @ v.T
    return balance @ pref  # pref = 1: LibMTL's B.sum(0) (B is symmetric)


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("case", ["random4", "random10", "rank_deficient", "conflicting"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_scale_modes_match_the_libmtl_and_torchjd_formulas(scale_mode, case, reduction):
    jac = jacobian_bank()[case].astype(np.float32)
    num_tasks = len(jac)
    method = weighting.aligned_mtl(scale_mode=scale_mode, reduction=reduction)
    _, weights, _ = weighting.aggregate(method, jnp.asarray(jac))
    pref = np.full(num_tasks, 1.0 if reduction == "sum" else 1.0 / num_tasks)
    expected = libmtl_aligned_weights(jac, scale_mode, pref)
    np.testing.assert_allclose(weights, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_default_scale_mode_is_libmtl_min():
    jac = jnp.asarray(jacobian_bank()["random10"])
    _, default, _ = weighting.aggregate(weighting.aligned_mtl(), jac)
    _, explicit, _ = weighting.aggregate(weighting.aligned_mtl(scale_mode="min"), jac)
    np.testing.assert_array_equal(default, explicit)


@pytest.mark.parametrize("scale_mode", ["max", "MIN", None])
def test_bad_scale_mode_names_the_option(scale_mode):
    with pytest.raises(ValueError, match=r"aligned_mtl: scale_mode must be one of"):
        weighting.aligned_mtl(scale_mode=scale_mode)


# --- graddrop(leak=...) ------------------------------------------------------------------


def graddrop_direction(method, jac, key):
    names = weighting.default_task_names(len(jac))
    state = method.init(names, jax.ShapeDtypeStruct(jac.shape[1:], jnp.float32))
    return np.asarray(method.update(None, state, key=key, rows=jnp.asarray(jac))[0])


def reference_graddrop(jac, leak, uniforms):
    """torchjd's `GradDrop.forward` (`M_i = (P > U)(g_i > 0) + (P < U)(g_i < 0)`, row i
    scaled by `leak[i] + (1 − leak[i]) M_i`) in NumPy; ties P = U have probability 0."""
    jac = np.asarray(jac, np.float64)
    purity = 0.5 * (1 + jac.sum(0) / np.abs(jac).sum(0))
    mask = (purity > uniforms) * (jac > 0) + (purity < uniforms) * (jac < 0)
    leak = np.asarray(leak, np.float64)[:, None]
    return np.sum((leak + (1 - leak) * mask) * jac, axis=0)


@pytest.mark.parametrize("leak", [(0.0, 0.0, 0.0, 0.0), (0.3, 0.0, 1.0, 0.7), (1.0,) * 4])
def test_per_task_leak_matches_torchjd_formula(leak):
    jac = jacobian_bank()["random4"].astype(np.float32)
    key = jax.random.PRNGKey(7)
    uniforms = np.asarray(jax.random.uniform(key, (jac.shape[1],), jnp.float32))
    direction = graddrop_direction(weighting.graddrop(leak=leak), jac, key)
    np.testing.assert_allclose(direction, reference_graddrop(jac, leak, uniforms), atol=1e-5)


def test_leak_zero_is_today_and_leak_one_is_the_sum():
    jac = jacobian_bank()["random4"].astype(np.float32)
    names = weighting.default_task_names(4)
    key = jax.random.PRNGKey(3)
    today = graddrop_direction(weighting.graddrop(), jac, key)
    for zero in [0.0, 0, (0.0,) * 4, dict.fromkeys(names, 0.0)]:
        np.testing.assert_array_equal(
            graddrop_direction(weighting.graddrop(leak=zero), jac, key), today
        )
    for one in [1.0, [1.0] * 4, dict.fromkeys(names, 1.0)]:
        direction = graddrop_direction(weighting.graddrop(leak=one), jac, key)
        np.testing.assert_allclose(direction, jac.sum(0), rtol=1e-6, atol=1e-6)


def test_leak_mapping_is_the_sequence_in_sorted_name_order():
    jac = jacobian_bank()["random4"][:3].astype(np.float32)
    names = ("depth", "normal", "segment")
    key = jax.random.PRNGKey(5)
    mapping = {"segment": 0.9, "depth": 0.1, "normal": 0.5}  # any insertion order

    def direction(leak):
        method = weighting.graddrop(leak=leak)
        state = method.init(names, jax.ShapeDtypeStruct(jac.shape[1:], jnp.float32))
        return np.asarray(method.update(None, state, key=key, rows=jnp.asarray(jac))[0])

    np.testing.assert_array_equal(direction(mapping), direction((0.1, 0.5, 0.9)))


def test_bad_leak_names_the_option():
    names = weighting.default_task_names(3)
    row = jax.ShapeDtypeStruct((2,), jnp.float32)
    with pytest.raises(ValueError, match=r"graddrop: leak is given for tasks \['a'\].*task0"):
        weighting.graddrop(leak={"a": 0.5}).init(names, row)
    with pytest.raises(ValueError, match="graddrop: leak has 2 entries but there are 3 tasks"):
        weighting.graddrop(leak=(0.5, 0.5)).init(names, row)
    for bad in [{"a": 1.5}, {"a": -0.1}, {}, {"a": True}, {1: 0.5}, 2.0, float("nan"), "0.5"]:
        with pytest.raises(ValueError, match="graddrop: leak must be"):
            weighting.graddrop(leak=bad)


# --- excess_mtl(n_warmup_steps=...) ------------------------------------------------------


def excess_rows(num_steps=7, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 5.0, 0.2])[:, None]
    return [
        (rng.normal(size=(3, 6)) * scales * (0.8**s)).astype(np.float32) for s in range(num_steps)
    ]


def run_excess(method, batches):
    update = jax.jit(method.update)
    state = method.init(weighting.default_task_names(3), jax.ShapeDtypeStruct((6,), jnp.float32))
    out = []
    for g in batches:
        direction, state, metrics = update(None, state, key=None, rows=jnp.asarray(g))
        out.append((np.asarray(direction), np.asarray(metrics["weights"]), state))
    return out


def reference_excess(batches, eta, n_warmup):
    """torchjd's `ExcessMTLWeighting.forward` in NumPy, weights as loss weights `T λ` and the
    baseline division without torchjd's `+ 1e-7` (as the docstring says)."""
    num_tasks = batches[0].shape[0]
    acc = np.zeros_like(batches[0], np.float64)
    lam = np.full(num_tasks, 1.0 / num_tasks)
    warm_sum, initial, out = np.zeros(num_tasks), None, []
    for step, g in enumerate(np.asarray(b, np.float64) for b in batches):
        acc = acc + g**2
        w = np.sum(g**2 / np.sqrt(acc + 1e-7), axis=1)
        if step < n_warmup:
            warm_sum += w
        else:
            if initial is None:
                initial = warm_sum / n_warmup if n_warmup > 0 else w
                if n_warmup > 0:
                    w = w / initial
            else:
                w = w / initial
            lam = lam * np.exp(w * eta)
            lam = lam / lam.sum()
        out.append(num_tasks * lam)
    return out


def test_one_warmup_step_is_the_default_bit_for_bit():
    batches = excess_rows()
    default = run_excess(weighting.excess_mtl(robust_step_size=0.5), batches)
    explicit = run_excess(weighting.excess_mtl(robust_step_size=0.5, n_warmup_steps=1), batches)
    for (d0, w0, s0), (d1, w1, s1) in zip(default, explicit, strict=True):
        np.testing.assert_array_equal(d1, d0)
        np.testing.assert_array_equal(w1, w0)
        for a, b in zip(jax.tree.leaves(s0), jax.tree.leaves(s1), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n_warmup", [0, 1, 2, 4])
def test_warmup_keeps_uniform_weights_then_follows_torchjd(n_warmup):
    batches = excess_rows()
    eta = 0.5
    out = run_excess(weighting.excess_mtl(robust_step_size=eta, n_warmup_steps=n_warmup), batches)
    expected = reference_excess(batches, eta, n_warmup)
    for step, ((direction, weights, state), ref) in enumerate(zip(out, expected, strict=True)):
        if step < n_warmup:
            np.testing.assert_array_equal(weights, np.ones(3))  # uniform: T · 1/T
            np.testing.assert_allclose(direction, batches[step].sum(0), rtol=1e-6, atol=1e-6)
        else:
            assert not np.allclose(weights, 1.0, rtol=1e-4)  # the robust step is applied
        np.testing.assert_allclose(weights, ref, rtol=1e-5)
        np.testing.assert_allclose(direction, ref @ batches[step], rtol=1e-5, atol=1e-6)
        assert int(state.step) == step + 1


def test_after_the_warmup_it_is_the_one_step_method_with_the_mean_baseline():
    """K warm-up updates, then the K = 1 method (the default) resumed from the same
    curvature with the warm-up's mean estimate as its baseline: the same numbers."""
    batches = excess_rows(num_steps=8)
    method = weighting.excess_mtl(robust_step_size=0.5, n_warmup_steps=3)
    update3 = jax.jit(method.update)
    update1 = jax.jit(weighting.excess_mtl(robust_step_size=0.5).update)
    state = method.init(weighting.default_task_names(3), jax.ShapeDtypeStruct((6,), jnp.float32))
    for g in batches[:3]:
        _, state, _ = update3(None, state, key=None, rows=jnp.asarray(g))
    resumed = state._replace(step=jnp.ones((), jnp.int32), initial_risk=state.initial_risk / 3)
    for g in batches[3:]:
        d3, state, m3 = update3(None, state, key=None, rows=jnp.asarray(g))
        d1, resumed, m1 = update1(None, resumed, key=None, rows=jnp.asarray(g))
        np.testing.assert_allclose(m3["weights"], m1["weights"], rtol=1e-6)
        np.testing.assert_allclose(d3, d1, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_bad_n_warmup_steps_names_the_option(bad):
    with pytest.raises(ValueError, match="excess_mtl: n_warmup_steps must be an integer >= 0"):
        weighting.excess_mtl(n_warmup_steps=bad)


# --- upgrad(normalize_rows=...) ----------------------------------------------------------


@pytest.mark.parametrize("case", ["random4", "conflicting", "rank_deficient", "random10"])
@pytest.mark.parametrize("scale", [1e-3, 7.0, 1e4])
def test_normalize_rows_is_invariant_to_one_task_loss_scale(case, scale):
    jac = jacobian_bank()[case].astype(np.float32)
    scaled = jac.copy()
    scaled[1] *= scale  # task 1's loss multiplied by `scale`
    method = weighting.upgrad(normalize_rows=True)
    d1, _, _ = weighting.aggregate(method, jnp.asarray(jac))
    d2, _, _ = weighting.aggregate(method, jnp.asarray(scaled))
    np.testing.assert_allclose(d2, d1, rtol=2e-4, atol=2e-5 * np.abs(np.asarray(d1)).max())


def test_normalize_rows_uses_the_cosine_gramian():
    """On the Gramian, normalising J's rows is `G_ij / √(G_ii G_jj)`: the weights from G
    equal those of the unit rows' Gramian, divided by the row norms."""
    jac = np.asarray(jacobian_bank()["conflicting"], np.float64)
    gram = jac @ jac.T
    cosine = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    method = weighting.upgrad(normalize_rows=True, pref_vector=(0.2, 0.5, 0.3))
    state = method.init(weighting.default_task_names(3))
    weights, _, _ = method.update(None, state, key=None, gramian=jnp.asarray(gram, jnp.float32))
    plain = weighting.upgrad(pref_vector=(0.2, 0.5, 0.3))
    unit_weights, _, _ = plain.update(
        None, state, key=None, gramian=jnp.asarray(cosine, jnp.float32)
    )
    norms = np.sqrt(np.diag(gram))
    np.testing.assert_allclose(weights, np.asarray(unit_weights) / norms, rtol=1e-5)
    # Still conflict-free, up to torchjd's ridge.
    direction = np.asarray(weights, np.float64) @ jac
    assert np.all(jac @ direction >= -1e-3 * np.trace(gram))


def test_normalize_rows_false_is_the_default_exactly():
    jac = jnp.asarray(jacobian_bank()["conflicting"])
    _, default, _ = weighting.aggregate(weighting.upgrad(), jac)
    _, explicit, _ = weighting.aggregate(weighting.upgrad(normalize_rows=False), jac)
    np.testing.assert_array_equal(explicit, default)


@pytest.mark.parametrize("bad", [1, "true", None])
def test_bad_normalize_rows_names_the_option(bad):
    with pytest.raises(ValueError, match="upgrad: normalize_rows must be a bool"):
        weighting.upgrad(normalize_rows=bad)


# --- from the command line ---------------------------------------------------------------

# experiments/configs/test.py trains the tasks boundary, left, right (sorted order).
CLI_CASES = [
    ["weighting.name=upgrad", "weighting.kwargs.pref_vector=(0.2, 0.3, 0.5)"],
    ["weighting.name=upgrad", "weighting.kwargs.normalize_rows=True"],
    ["weighting.name=dualproj", "weighting.kwargs.pref_vector=[0.2, 0.3, 0.5]"],
    ["weighting.name=config", "weighting.kwargs.pref_vector=(1, 2, 3)"],
    [
        "weighting.name=aligned_mtl",
        "weighting.kwargs.pref_vector=(1.0, 1.0, 2.0)",
        "weighting.kwargs.scale_mode=median",
    ],
    ["weighting.name=graddrop", "weighting.kwargs.leak=(0.0, 0.5, 1.0)"],
    ["weighting.name=graddrop", "weighting.kwargs.leak={'left': 0.5, 'right': 0.1, 'boundary': 0}"],
    ["weighting.name=excess_mtl", "weighting.kwargs.n_warmup_steps=3"],
]


@pytest.mark.parametrize("overrides", CLI_CASES, ids=lambda o: o[0].split("=")[1])
def test_options_from_the_command_line(overrides):
    experiment = build_experiment(load_config(TEST_CONFIG, overrides))
    assert isinstance(experiment.weighting, weighting.Weighting)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["weighting.name=upgrad", "weighting.kwargs.pref_vector=(0.5, 0.5)"],
            "upgrad: pref_vector has 2 entries but there are 3 tasks",
        ),
        (
            ["weighting.name=aligned_mtl", "weighting.kwargs.scale_mode=mean"],
            "aligned_mtl: scale_mode must be one of",
        ),
        (
            ["weighting.name=excess_mtl", "weighting.kwargs.n_warmup_steps=-2"],
            "excess_mtl: n_warmup_steps",
        ),
    ],
)
def test_bad_options_from_the_command_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(load_config(TEST_CONFIG, overrides))


def test_leak_mapping_from_the_command_line_is_checked_against_the_tasks():
    """Jacobian-kind methods are initialised by the trainer (they need the gradient's
    shape), so a mapping naming other tasks is reported by `init`."""
    overrides = ["weighting.name=graddrop", "weighting.kwargs.leak={'left': 0.5}"]
    experiment = build_experiment(load_config(TEST_CONFIG, overrides))
    row = jax.ShapeDtypeStruct((2,), jnp.float32)
    with pytest.raises(ValueError, match=r"graddrop: leak is given for tasks \['left'\]"):
        experiment.weighting.init_for(experiment.task_names, row)
