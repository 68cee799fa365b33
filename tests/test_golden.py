"""Golden values: the first three updates of every method on a fixed bank (STYLE rule 12).

`tests/golden_values.json` holds, for every name in `weighting.METHODS`, the directions
and weights of three successive `aggregate` calls on each case of `tests.golden.cases()`
(see `tests/golden.py` for the inputs, options and keys). A refactor must reproduce them;
a method missing from the table fails, so a new method adds its row.

The tolerances (`rtol=1e-4`, and `atol=1e-6` × the largest |value| of that step; ten
times looser for the methods in `TOLERANCES`, each with its reason) absorb
the summation-order noise of XLA on different CPUs but not a change of a formula, an
option's default or the order of random draws. A second test checks that claim: every
case moved by about one ulp of noise must still match the table, so that the bank does
not sit where a method branches (a solver's stopping test, a selection, a sign).

To regenerate the table after a deliberate change (or for a new method):

    .venv/bin/python -m tests.golden

Regenerating is a deliberate act: review the diff of `golden_values.json` and say in the
commit message which methods changed and why.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from mtl_jax import weighting
from tests import golden

# (rtol, atol as a multiple of the largest |value| of the step).
DEFAULT_TOLERANCE = (1e-4, 1e-6)
# Ten times looser, with the reason:
# * MGDA and CAGrad are defined only to their solvers' stopping tolerance: Frank–Wolfe
#   stops at a relative KKT gap of `tol=1e-5`, and a one-ulp change of the Gramian can
#   move where it stops by ~1e-5 of the weights (on this bank ~10 % of one-ulp input
#   perturbations moved MGDA past the default tolerance, ~2 % CAGrad);
# * Aligned-MTL rests on a float32 `eigh` of an ill-conditioned Gramian (`conflict3`):
#   its own round-off, which another LAPACK build need not share, already uses half of
#   the default tolerance;
# * CR-MOGM wraps MGDA by default: its first weights are MGDA's and the later ones an
#   average of MGDA's, so it inherits MGDA's stopping tolerance.
LOOSE = (1e-3, 1e-5)
TOLERANCES = {"mgda": LOOSE, "cagrad": LOOSE, "aligned_mtl": LOOSE, "cr_mogm": LOOSE}
# The noise test: copies of every case with each input multiplied by (1 + ε), ε of this
# standard deviation (about one float32 ulp), stand in for another CPU's rounding.
NOISE = 2.0**-23
NOISE_DRAWS = 3
REGENERATE = f"regenerate with `{golden.COMMAND}` and justify it in the commit message"


@pytest.fixture(scope="module")
def table():
    return json.loads(golden.TABLE.read_text())


def noisy_bank():
    """`golden.cases()` and `NOISE_DRAWS` perturbed copies of each case (`case~draw`)."""
    bank = golden.cases()
    for draw in range(NOISE_DRAWS):
        rng = np.random.default_rng(draw)
        for case, arrays in golden.cases().items():
            bank[f"{case}~{draw}"] = {
                field: (value * (1 + NOISE * rng.standard_normal(value.shape))).astype(np.float32)
                for field, value in arrays.items()
            }
    return bank


@functools.cache
def results(name):
    """All cases and their noisy copies in one run (one compilation per method)."""
    return golden.compute(name, noisy_bank())


def test_table_lists_exactly_the_methods(table):
    """A method added to or removed from `METHODS` must add or remove its row."""
    assert sorted(table["methods"]) == sorted(weighting.METHODS), REGENERATE


def test_inputs_unchanged(table):
    """The bank is the one the table was made from (a changed input, or a NumPy whose
    Gaussian stream differs, would otherwise look like every method changing)."""
    assert golden.inputs_digest() == table["header"]["inputs_sha256"], REGENERATE


def assert_close(name, actual, expected, what, hint):
    """`actual` ({"directions", "weights"}) matches the table's `expected`, step by step."""
    rtol, atol_factor = TOLERANCES.get(name, DEFAULT_TOLERANCE)
    if expected["weights"] is None:
        assert actual["weights"] is None, f"{what}: now returns weights"
    else:
        assert actual["weights"] is not None, f"{what}: no longer returns weights"
    for field in ("directions", "weights"):
        if expected[field] is None:
            continue
        assert len(actual[field]) == len(expected[field]) == golden.NUM_STEPS, what
        for step, (got, want) in enumerate(zip(actual[field], expected[field], strict=True)):
            want = np.asarray(want, np.float64)
            np.testing.assert_allclose(
                np.asarray(got, np.float64),
                want,
                rtol=rtol,
                atol=atol_factor * float(np.max(np.abs(want))),
                err_msg=f"{what} {field}, step {step}: {hint}",
            )


@pytest.mark.parametrize("name", weighting.METHODS)
def test_matches_golden_values(name, table):
    assert name in table["methods"], f"{name} has no golden row: " + REGENERATE
    expected = table["methods"][name]
    assert sorted(expected) == sorted(golden.cases()), REGENERATE
    for case in expected:
        hint = "the golden value changed; if on purpose, " + REGENERATE
        assert_close(name, results(name)[case], expected[case], f"{name}/{case}", hint)


@pytest.mark.parametrize("name", weighting.METHODS)
def test_golden_values_survive_one_ulp_of_input_noise(name, table):
    """Inputs moved by about one ulp stay within the tolerance: the test above would
    otherwise depend on the CPU's rounding (the bank sits on a branch of the method)."""
    assert name in table["methods"], f"{name} has no golden row: " + REGENERATE
    hint = (
        "one ulp of input noise moves the result past the tolerance, so the golden test "
        "would fail on another CPU: give the method a documented entry in TOLERANCES or "
        "choose another golden.SEED"
    )
    for case, actual in results(name).items():
        if "~" in case:
            expected = table["methods"][name][case.split("~")[0]]
            assert_close(name, actual, expected, f"{name}/{case}", hint)
