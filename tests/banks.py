"""Banks of task-gradient matrices J [T, P] for property tests (STYLE rule 12)."""

from __future__ import annotations

import numpy as np


def jacobian_bank(seed: int = 0) -> dict[str, np.ndarray]:
    """Named [T, P] matrices: random, zero, identical, opposite, rank-deficient, scaled."""
    rng = np.random.default_rng(seed)
    random = rng.normal(size=(4, 30))
    bank = {
        "random2": rng.normal(size=(2, 30)),
        "random4": random,
        "random10": rng.normal(size=(10, 50)),
        "zero": np.zeros((3, 30)),
        "one_zero_row": np.concatenate([random[:2], np.zeros((1, 30))]),
        "identical": np.repeat(random[:1], 3, axis=0),
        "opposite": np.stack([random[0], -random[0]]),
        "rank_deficient": rng.normal(size=(5, 2)) @ rng.normal(size=(2, 30)),
        "more_tasks_than_params": rng.normal(size=(6, 3)),
        "conflicting": np.array([[1.0, 0.2, 0.0], [-0.9, 0.3, 0.0], [0.1, -1.0, 0.5]]),
    }
    for exponent in (-10, -5, 5, 10):
        bank[f"scaled_1e{exponent}"] = random * 10.0**exponent
    bank["mixed_scales"] = random * np.array([1e-8, 1.0, 1e4, 1e8])[:, None]
    return {name: value.astype(np.float32) for name, value in bank.items()}


def loss_bank() -> dict[str, np.ndarray]:
    """Named loss vectors [3] at the edges of float32: zero, tiny, huge, mixed."""
    bank = {
        "zeros": [0.0, 0.0, 0.0],
        "tiny": [1e-10, 1e-10, 1e-10],
        "huge": [1e10, 1e10, 1e10],
        "mixed": [0.0, 1e-10, 1e10],
        "spread": [1e-10, 1.0, 1e10],
    }
    return {name: np.asarray(value, np.float32) for name, value in bank.items()}


# The cases every default test run covers; the rest of a bank runs in `make test-all`.
CORE_CASES = frozenset(
    {
        "random4",
        "zero",
        "one_zero_row",
        "opposite",
        "rank_deficient",
        "more_tasks_than_params",
        "scaled_1e-10",
        "scaled_1e10",
        "mixed_scales",
        "zeros",
        "mixed",
        "spread",
    }
)


def bank_params(bank: dict) -> list:
    """`pytest.param`s of a bank's case names, the non-core ones marked `slow`."""
    import pytest

    return [
        pytest.param(name, marks=() if name in CORE_CASES else pytest.mark.slow)
        for name in sorted(bank)
    ]
