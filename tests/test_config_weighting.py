"""`config` (ConFIG): equal positive cosines to every task gradient, from the Gramian.

Named `test_config_weighting.py` because `test_config.py` tests `mtl_jax.config`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._config import config
from tests.banks import bank_params, jacobian_bank

FULL_RANK = [
    "random2",
    "random4",
    "random10",
    "conflicting",
    "scaled_1e-10",
    "scaled_1e-5",
    "scaled_1e5",
    "scaled_1e10",
    "mixed_scales",
]


def reference_direction(jac: np.ndarray, rcond: float) -> np.ndarray:
    """ConFIG Eq. 2 in float64 from J itself, as the authors and torchjd compute it."""
    jac = np.asarray(jac, np.float64)
    norms = np.linalg.norm(jac, axis=1)
    units = np.where(norms[:, None] > 0, jac / np.where(norms > 0, norms, 1.0)[:, None], 0.0)
    best = np.linalg.pinv(units, rcond=rcond) @ np.ones(len(jac))
    size = np.linalg.norm(best)
    if size == 0:
        return best
    unit = best / size
    return np.sum(jac @ unit) * unit


def cosines(jac, direction):
    jac = np.asarray(jac, np.float64)
    direction = np.asarray(direction, np.float64)
    return jac @ direction / (np.linalg.norm(jac, axis=1) * np.linalg.norm(direction))


@pytest.mark.parametrize("case", FULL_RANK)
def test_equal_positive_cosines(case):
    jac = jacobian_bank()[case]
    direction, _, _ = weighting.aggregate(config(), jnp.asarray(jac))
    cos = cosines(jac, direction)
    assert np.all(cos > 0), cos
    np.testing.assert_allclose(cos, cos[0], rtol=1e-4)
    # The length is the sum of the projections of the task gradients on the direction.
    norm = np.linalg.norm(np.asarray(direction, np.float64))
    unit = np.asarray(direction, np.float64) / norm
    np.testing.assert_allclose(norm, np.sum(jac.astype(np.float64) @ unit), rtol=1e-4)


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_matches_pseudo_inverse_reference(case):
    jac = jacobian_bank()[case]
    direction, weights, _ = weighting.aggregate(config(), jnp.asarray(jac))
    assert np.all(np.isfinite(weights)) and np.all(np.isfinite(direction))
    # rcond on singular values of U; the default rank_tol=1e-5 is on eigenvalues of UUᵀ.
    expected = reference_direction(jac, rcond=np.sqrt(1e-5))
    scale = max(np.linalg.norm(expected), np.linalg.norm(jac, axis=1).max() * 1e-6, 1e-30)
    assert np.linalg.norm(np.asarray(direction, np.float64) - expected) <= 1e-4 * scale, case


def test_two_orthogonal_tasks_bisect():
    jac = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
    direction, weights, _ = weighting.aggregate(config(), jac)
    # û = (1, 1)/√2, length = (1 + 2)/√2: d = (1.5, 1.5).
    np.testing.assert_allclose(direction, [1.5, 1.5], rtol=1e-6)
    np.testing.assert_allclose(weights, [1.5, 0.75], rtol=1e-6)


def test_zero_rows_and_opposite_rows():
    bank = jacobian_bank()
    _, weights, _ = weighting.aggregate(config(), jnp.asarray(bank["one_zero_row"]))
    assert float(weights[2]) == 0.0
    cos = cosines(bank["one_zero_row"][:2], weights[:2] @ bank["one_zero_row"][:2])
    np.testing.assert_allclose(cos, cos[0], rtol=1e-4)
    for case in ("opposite", "zero"):
        direction, weights, _ = weighting.aggregate(config(), jnp.asarray(bank[case]))
        np.testing.assert_allclose(direction, 0.0, atol=1e-6 * np.abs(bank[case]).max())


def test_rank_metric_under_jit():
    method = config()
    for case, rank in [("random4", 4), ("identical", 1), ("rank_deficient", 2)]:
        jac = jnp.asarray(jacobian_bank()[case])
        state = method.init(("a",) * len(jac))
        _, _, metrics = jax.jit(method.update)(None, state, key=None, gramian=jac @ jac.T)
        assert int(metrics["rank"]) == rank, case


def test_bad_rank_tol():
    with pytest.raises(ValueError, match="rank_tol"):
        config(rank_tol=-1.0)


def reference_pref_direction(jac: np.ndarray, pref, rcond: float = 1e-3) -> np.ndarray:
    """torchjd's ConFIG with a pref_vector, in float64: normalise(pinv(U) p), scaled."""
    jac = np.asarray(jac, np.float64)
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    best = np.linalg.pinv(units, rcond=rcond) @ np.asarray(pref, np.float64)
    unit = best / np.linalg.norm(best)
    return np.sum(jac @ unit) * unit


def test_ones_pref_vector_is_the_default():
    jac = jnp.asarray(jacobian_bank()["random4"])
    default, _, _ = weighting.aggregate(config(), jac)
    ones, _, _ = weighting.aggregate(config(pref_vector=(1.0,) * 4), jac)
    np.testing.assert_allclose(ones, default, rtol=1e-5, atol=1e-6)
    # Only the direction of p matters.
    scaled, _, _ = weighting.aggregate(config(pref_vector=(3.0,) * 4), jac)
    np.testing.assert_allclose(scaled, default, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["random2", "random4", "conflicting"])
def test_pref_vector_sets_the_cosines(case):
    jac = jacobian_bank()[case]
    pref = np.linspace(1.0, 2.0, len(jac))
    direction, _, _ = weighting.aggregate(config(pref_vector=tuple(pref)), jnp.asarray(jac))
    np.testing.assert_allclose(direction, reference_pref_direction(jac, pref), rtol=1e-3, atol=1e-4)
    # Full rank: u_t · ĝ ∝ p_t.
    cos = cosines(jac, direction)
    np.testing.assert_allclose(cos / cos[0], pref / pref[0], rtol=1e-3)


def test_bad_pref_vector():
    with pytest.raises(ValueError, match="config: pref_vector has 1 entries but there are 2"):
        config(pref_vector=(1.0,)).init(("a", "b"))
    with pytest.raises(ValueError, match="config: pref_vector"):
        config(pref_vector=(1.0, float("nan")))
