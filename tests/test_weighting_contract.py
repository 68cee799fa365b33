"""Every method through the same contract (STYLE rule 12)."""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from tests.banks import bank_params, jacobian_bank, loss_bank

KEY = jax.random.PRNGKey(0)

# Options a method cannot run without (the rest use their defaults).
REQUIRED_OPTIONS = {
    "dwa": {"steps_per_epoch": 2},
    # No warm-up, so that the STCH weights themselves are in use from the second call.
    "stch": {"steps_per_epoch": 1, "warmup_epochs": 0},
}


def build(name: str, num_tasks: int = 3) -> weighting.Weighting:
    options = dict(REQUIRED_OPTIONS.get(name, {}))
    if name == "trimmed_mean":  # needs more than 2 × trim_number tasks
        options["trim_number"] = min(1, (num_tasks - 1) // 2)
    if name == "fixed":
        options["weights"] = {
            n: 1.0 + i for i, n in enumerate(weighting.default_task_names(num_tasks))
        }
    return weighting.create(name, **options)


UPDATE_KEYWORDS = ("key", "gramian", "rows")

# Non-default options shared with torchjd / LibMTL (for 3 tasks), run through the same
# contract; their defining behaviour is tested in test_weighting_options.py.
OPTION_VARIANTS = {
    "upgrad": [{"pref_vector": (0.2, 0.3, 0.5)}, {"normalize_rows": True}],
    "dualproj": [{"pref_vector": (0.2, 0.3, 0.5)}],
    "config": [{"pref_vector": (1.0, 2.0, 3.0)}],
    "aligned_mtl": [
        {"pref_vector": (1.0, 1.0, 2.0)},
        {"scale_mode": "median"},
        {"scale_mode": "rmse"},
    ],
    "graddrop": [{"leak": (0.0, 0.5, 1.0)}, {"leak": {"task0": 0.2, "task1": 0.0, "task2": 1.0}}],
    "excess_mtl": [{"n_warmup_steps": 0}, {"n_warmup_steps": 3}],
}
OPTION_CASES = [(name, options) for name, cases in OPTION_VARIANTS.items() for options in cases]


def test_every_exported_method_is_listed_and_builds():
    for name in weighting.METHODS:
        assert name in weighting.__all__
        method = build(name)
        assert method.kind in weighting.KINDS
        # One update signature for every kind (the trainer calls them all alike).
        params = inspect.signature(method.update).parameters
        assert list(params)[:2] == ["losses", "state"], name
        assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in UPDATE_KEYWORDS)
        assert params["key"].default is inspect.Parameter.empty, name
        assert {k: params[k].default for k in ("gramian", "rows")} == {
            "gramian": None,
            "rows": None,
        }, name
        # Every factory cites its source: a paper with its year (equal/fixed have none).
        factory_doc = getattr(weighting, name).__doc__
        assert factory_doc and (
            re.search(r"\b(19|20)\d\d\b", factory_doc) or name in ("equal", "fixed")
        ), name


@pytest.mark.parametrize("name", weighting.METHODS)
def test_contract(name):
    check_contract(build(name))


@pytest.mark.parametrize(("name", "options"), OPTION_CASES, ids=lambda x: str(x))
def test_contract_with_options(name, options):
    check_contract(weighting.create(name, **options))


def check_contract(method):
    names = weighting.default_task_names(3)
    state = method.init_for(names, jax.ShapeDtypeStruct((20,), jnp.float32))
    rng = np.random.default_rng(0)
    jac = jnp.asarray(rng.normal(size=(3, 20)), jnp.float32)
    losses = jnp.asarray([0.5, 1.0, 2.0])
    # A method that does not declare itself stochastic must not read its key: it gets None.
    key = KEY if method.stochastic else None
    # The trainer donates the state: a method must not alias one buffer in two fields.
    aggregate = jax.jit(
        lambda j, losses, s: weighting.aggregate(method, j, losses=losses, state=s, key=key),
        donate_argnums=2,
    )
    direction, weights, new_state = aggregate(jac, losses, state)
    direction, weights, new_state = aggregate(jac * 2, losses * 3, new_state)
    assert aggregate._cache_size() == 1, "recompiled on the second call"
    assert direction.shape == (20,) and np.all(np.isfinite(direction))
    if method.kind == weighting.JACOBIAN:
        assert weights is None
    else:
        assert weights.shape == (3,) and np.all(np.isfinite(weights))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype


@pytest.mark.parametrize("name", weighting.METHODS)
@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_finite_on_bank(name, case):
    jac = jnp.asarray(jacobian_bank()[case])
    method = build(name, jac.shape[0])
    if name == "krum" and jac.shape[0] < 3:  # Krum needs n_byzantine + 3 rows
        with pytest.raises(ValueError, match="at least n_byzantine"):
            weighting.aggregate(method, jac, losses=jnp.ones(jac.shape[0]), key=KEY)
        return
    losses = jnp.linspace(0.5, 2.0, jac.shape[0])
    direction, weights, _ = weighting.aggregate(method, jac, losses=losses, key=KEY)
    assert weights is None or np.all(np.isfinite(weights)), case
    assert np.all(np.isfinite(direction)), case


@pytest.mark.parametrize("name", weighting.METHODS)
def test_converges_on_conflicting_quadratics(name):
    check_converges(build(name, 3), name)


@pytest.mark.parametrize(("name", "options"), OPTION_CASES, ids=lambda x: str(x))
def test_converges_on_conflicting_quadratics_with_options(name, options):
    check_converges(weighting.create(name, **options), name)


def check_converges(method, name):
    """Tasks L_t = ‖x − a_t‖²/2 conflict; descent must end on their Pareto set."""
    targets = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    state = method.init_for(
        weighting.default_task_names(3), jax.ShapeDtypeStruct((2,), jnp.float32)
    )

    @jax.jit
    def step(x, state, key):
        jac = x[None, :] - targets
        # The +1 keeps every loss positive (log-loss methods such as scale_invariant
        # diverge where a loss reaches 0) and changes neither gradients nor Pareto set.
        losses = 0.5 * jnp.sum(jac**2, axis=1) + 1.0
        direction, _, state = weighting.aggregate(method, jac, losses=losses, state=state, key=key)
        return x - 0.1 * direction, state

    x = jnp.asarray([3.0, 3.0])
    for i in range(300):
        x, state = step(x, state, jax.random.fold_in(KEY, i))
    # The Pareto set of these quadratics is the triangle spanned by the targets: the
    # origin-centred point must satisfy x = Σ λ_t a_t with λ on the simplex.
    lam = np.linalg.lstsq(
        np.vstack([np.asarray(targets).T, np.ones(3)]), np.append(np.asarray(x), 1.0), rcond=None
    )[0]
    assert np.all(lam >= -1e-2), (name, np.asarray(x), lam)


JACOBIAN_METHODS = [n for n in weighting.METHODS if build(n).kind == weighting.JACOBIAN]


@pytest.mark.parametrize("name", JACOBIAN_METHODS)
def test_jacobian_method_on_pytree_rows_matches_the_flat_matrix(name):
    """Rows as a pytree of leaves (how the trainer passes them) = the flattened matrix."""
    rng = np.random.default_rng(4)
    rows = {
        "a": jnp.asarray(rng.normal(size=(3, 2, 3)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
    }
    flat = jnp.concatenate([rows["a"].reshape(3, -1), rows["b"]], axis=1)
    losses = jnp.asarray([0.5, 1.0, 2.0])
    method = build(name)
    names = weighting.default_task_names(3)
    tree_state = method.init_for(
        names, jax.eval_shape(lambda r: jax.tree.map(lambda x: x[0], r), rows)
    )
    flat_state = method.init_for(names, jax.ShapeDtypeStruct((10,), jnp.float32))
    update = jax.jit(method.update)
    for _ in range(3):
        tree_dir, tree_state, _ = update(losses, tree_state, key=KEY, rows=rows)
        flat_dir, flat_state, _ = update(losses, flat_state, key=KEY, rows=flat)
        joined = jnp.concatenate([tree_dir["a"].reshape(-1), tree_dir["b"]])
        np.testing.assert_allclose(joined, flat_dir, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", weighting.METHODS)
@pytest.mark.parametrize("case", bank_params(loss_bank()))
def test_finite_on_extreme_losses(name, case):
    """Zero, tiny and huge losses over several steps (state that averages them included)."""
    method = build(name)
    jac = jnp.asarray(jacobian_bank()["random4"][:3])
    state = method.init_for(
        weighting.default_task_names(3), jax.ShapeDtypeStruct((30,), jnp.float32)
    )
    step = jax.jit(
        lambda losses, s: weighting.aggregate(method, jac, losses=losses, state=s, key=KEY)
    )
    rows = [loss_bank()[case], loss_bank()["spread"], loss_bank()[case], loss_bank()[case]]
    for losses in rows:
        direction, weights, state = step(jnp.asarray(losses), state)
        assert weights is None or np.all(np.isfinite(weights)), (case, weights)
        assert np.all(np.isfinite(direction)), case
