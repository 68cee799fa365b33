"""`aligned_mtl`: the aligned gradients have condition number 1, on every bank."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting._aligned_mtl import aligned_mtl, balance_transformation
from tests.banks import bank_params, jacobian_bank


def reference_weights(jac: np.ndarray, rank_tol: float) -> np.ndarray:
    """Alg. 1 in float64 from the SVD of J (not the Gramian): w = √σ²_R Σ_i v_i v_iᵀ 1 / σ_i."""
    jac = np.asarray(jac, np.float64)
    left, singular, _ = np.linalg.svd(jac, full_matrices=False)
    keep = singular**2 > rank_tol * singular[0] ** 2
    left, singular = left[:, keep], singular[keep]
    return singular[-1] * left @ ((left.T @ np.ones(len(jac))) / singular)


def test_orthogonal_rows_are_scaled_to_the_smallest():
    jac = jnp.asarray([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    direction, weights, _ = weighting.aggregate(aligned_mtl(), jac)
    np.testing.assert_allclose(weights, [1 / 3, 1.0, 1 / 2], rtol=1e-6)
    np.testing.assert_allclose(direction, [1.0, 1.0, 1.0], rtol=1e-6)
    _, weights, _ = weighting.aggregate(aligned_mtl(reduction="mean"), jac)
    np.testing.assert_allclose(weights, np.array([1 / 3, 1.0, 1 / 2]) / 3, rtol=1e-6)


@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_aligned_singular_values_are_equal(case):
    jac = jacobian_bank()[case]
    gram = jnp.asarray(jac) @ jnp.asarray(jac).T
    balance, rank = balance_transformation(gram)
    balance = np.asarray(balance, np.float64)
    assert np.all(np.isfinite(balance))
    aligned = balance @ jac.astype(np.float64)
    singular = np.linalg.svd(aligned, compute_uv=False)
    if int(rank) == 0:  # zero gradients: B = I
        np.testing.assert_array_equal(balance, np.eye(len(jac)))
        return
    kept = singular[: int(rank)]
    assert np.all(np.abs(kept - kept[0]) <= 1e-3 * kept[0]), (case, singular)
    assert np.all(singular[int(rank) :] <= 1e-3 * kept[0]), (case, singular)
    # The common value is the smallest kept singular value of J itself.
    original = np.linalg.svd(jac.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(kept[0], original[int(rank) - 1], rtol=1e-3)


@pytest.mark.parametrize("case", ["random2", "random4", "random10", "conflicting", "scaled_1e10"])
def test_matches_svd_reference(case):
    jac = jacobian_bank()[case]
    _, weights, _ = weighting.aggregate(aligned_mtl(), jnp.asarray(jac))
    expected = reference_weights(jac, rank_tol=len(jac) * 1.1920929e-07)
    np.testing.assert_allclose(weights, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_finite_and_rank_on_degenerate_banks():
    bank = jacobian_bank()
    method = aligned_mtl()
    for case, rank in [("zero", 0), ("one_zero_row", 2), ("identical", 1), ("opposite", 1)]:
        jac = jnp.asarray(bank[case])
        weights, _, metrics = method.update(
            None, method.init(("a",) * len(jac)), key=None, gramian=jac @ jac.T
        )
        assert np.all(np.isfinite(weights)), case
        assert int(metrics["rank"]) == rank, case
    # Zero gradients: B = I, so the weights are the preference.
    _, weights, _ = weighting.aggregate(method, jnp.asarray(bank["zero"]))
    np.testing.assert_array_equal(weights, np.ones(3))


def test_scale_invariance():
    jac = jacobian_bank()["random4"]
    _, w1, _ = weighting.aggregate(aligned_mtl(), jnp.asarray(jac))
    _, w2, _ = weighting.aggregate(aligned_mtl(), jnp.asarray(jac * 1e-8))
    # B does not change when J is scaled, and neither do the weights.
    np.testing.assert_allclose(w1, w2, rtol=1e-4)


def test_rank_tol_drops_weak_components():
    jac = jnp.asarray([[1.0, 0.0], [0.0, 1e-3]])  # eigenvalues 1 and 1e-6
    _, weights, _ = weighting.aggregate(aligned_mtl(), jac)
    np.testing.assert_allclose(weights, [1e-3, 1.0], rtol=1e-4)
    _, weights, _ = weighting.aggregate(aligned_mtl(rank_tol=1e-4), jac)
    np.testing.assert_allclose(weights, [1.0, 0.0], atol=1e-6)


def test_runs_under_jit():
    jac = jnp.asarray(jacobian_bank()["random4"])
    method = aligned_mtl()
    weights, _, metrics = jax.jit(method.update)(
        None, method.init(("a",) * 4), key=None, gramian=jac @ jac.T
    )
    assert int(metrics["rank"]) == 4 and np.all(np.isfinite(weights))


@pytest.mark.parametrize(
    ("options", "match"), [({"reduction": "max"}, "reduction"), ({"rank_tol": 1.5}, "rank_tol")]
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        aligned_mtl(**options)


def reference_scaled_weights(jac, scale_mode, pref=None):
    """Alg. 1 from the SVD of J in float64 with torchjd's scale modes over the kept σ²."""
    jac = np.asarray(jac, np.float64)
    left, singular, _ = np.linalg.svd(jac, full_matrices=False)
    keep = singular**2 > len(jac) * 1.1920929e-07 * singular[0] ** 2
    left, singular = left[:, keep], singular[keep]
    squares = np.sort(singular**2)
    scale = {
        "min": squares[0],
        "median": squares[(len(squares) - 1) // 2],  # torch.median: the lower middle
        "rmse": squares.mean(),
    }[scale_mode]
    pref = np.ones(len(jac)) if pref is None else np.asarray(pref, np.float64)
    return np.sqrt(scale) * left @ ((left.T @ pref) / singular)


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("case", ["random2", "random4", "random10", "rank_deficient"])
def test_scale_modes_match_svd_reference(case, scale_mode):
    jac = jacobian_bank()[case]
    direction, weights, _ = weighting.aggregate(
        aligned_mtl(scale_mode=scale_mode), jnp.asarray(jac)
    )
    expected = reference_scaled_weights(jac, scale_mode)
    np.testing.assert_allclose(weights, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_scale_modes_on_orthogonal_rows():
    # Singular values 3, 2, 1 and 4, 3, 2, 1: the aligned rows get length √s.
    for norms, median in [([3.0, 2.0, 1.0], 4.0), ([4.0, 3.0, 2.0, 1.0], 4.0)]:
        jac = jnp.asarray(np.diag(norms))
        squares = np.square(norms)
        for mode, scale in [("min", 1.0), ("median", median), ("rmse", squares.mean())]:
            _, weights, _ = weighting.aggregate(aligned_mtl(scale_mode=mode), jac)
            np.testing.assert_allclose(weights, np.sqrt(scale) / np.asarray(norms), rtol=1e-5)


def test_default_scale_mode_is_min_exactly():
    jac = jnp.asarray(jacobian_bank()["random4"])
    _, default, _ = weighting.aggregate(aligned_mtl(), jac)
    _, explicit, _ = weighting.aggregate(aligned_mtl(scale_mode="min"), jac)
    np.testing.assert_array_equal(default, explicit)


def test_pref_vector_weights_the_aligned_rows():
    jac = jacobian_bank()["random4"]
    _, default, _ = weighting.aggregate(aligned_mtl(), jnp.asarray(jac))
    _, ones, _ = weighting.aggregate(aligned_mtl(pref_vector=(1.0,) * 4), jnp.asarray(jac))
    np.testing.assert_array_equal(ones, default)
    pref = (0.1, 0.2, 0.3, 0.4)
    for mode in ("min", "rmse"):
        _, weights, _ = weighting.aggregate(
            aligned_mtl(pref_vector=pref, scale_mode=mode), jnp.asarray(jac)
        )
        expected = reference_scaled_weights(jac, mode, pref)
        np.testing.assert_allclose(weights, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_zero_gramian_with_pref_vector_gives_the_preference():
    _, weights, _ = weighting.aggregate(aligned_mtl(pref_vector=(1.0, 2.0, 0.5)), jnp.zeros((3, 4)))
    np.testing.assert_array_equal(weights, [1.0, 2.0, 0.5])


def test_bad_pref_vector_and_scale_mode():
    with pytest.raises(ValueError, match="aligned_mtl: pref_vector has 2 entries but there are 3"):
        aligned_mtl(pref_vector=(1.0, 1.0)).init(("a", "b", "c"))
    with pytest.raises(ValueError, match="aligned_mtl: pref_vector"):
        aligned_mtl(pref_vector=(1.0, -0.5))
    with pytest.raises(ValueError, match="aligned_mtl: scale_mode"):
        aligned_mtl(scale_mode="mean")
