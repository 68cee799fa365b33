"""mtl_jax's weighting contract, run on methods of your own (the guide "Writing a
weighting method"). From a checkout of mtl_jax, with your module importable:

    PYTHONPATH=docs/examples python -m pytest docs/examples/test_my_methods.py -q
"""

from __future__ import annotations

import pytest

from tests import test_weighting_contract as contract
from tests.banks import bank_params, jacobian_bank, loss_bank

# Import paths, as a config names them; `contract` builds each with `weighting.create`.
METHODS = ["my_methods:norm_balance", "my_methods:task_dropout"]


@pytest.mark.parametrize("name", METHODS)
def test_contract(name):
    # Jits, no recompile on the second call, state structure stable, finite output.
    contract.test_contract(name)


@pytest.mark.parametrize("name", METHODS)
def test_converges_on_conflicting_quadratics(name):
    contract.test_converges_on_conflicting_quadratics(name)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("case", bank_params(jacobian_bank()))
def test_finite_on_bank(name, case):
    # Zero, identical, opposite, rank-deficient and 1e-10 ... 1e10-scaled gradients.
    contract.test_finite_on_bank(name, case)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("case", bank_params(loss_bank()))
def test_finite_on_extreme_losses(name, case):
    contract.test_finite_on_extreme_losses(name, case)
