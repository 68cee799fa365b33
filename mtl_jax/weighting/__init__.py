"""Task-weighting methods: each a factory returning `Weighting(init, update, kind)`.

Look a method up by name with `create(name, **kwargs)` (or `getattr` on this module);
`METHODS` lists every name.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from mtl_jax.weighting._aggregate import aggregate, default_task_names
from mtl_jax.weighting._base import GRAMIAN, JACOBIAN, KINDS, LOSS, Weighting
from mtl_jax.weighting._dwa import DWAState, dwa
from mtl_jax.weighting._equal import EqualState, equal
from mtl_jax.weighting._famo import FAMOState, famo
from mtl_jax.weighting._fixed import FixedState, fixed
from mtl_jax.weighting._gls import GLSState, gls
from mtl_jax.weighting._gradnorm import GradNormState, gradnorm
from mtl_jax.weighting._gradvac import GradVacState, gradvac
from mtl_jax.weighting._mgda import MGDAState, mgda
from mtl_jax.weighting._min_norm import MinNormResult, min_norm_simplex
from mtl_jax.weighting._rlw import RLWState, rlw
from mtl_jax.weighting._scale_invariant import ScaleInvariantState, scale_invariant
from mtl_jax.weighting._stch import STCHState, stch
from mtl_jax.weighting._uncertainty import UncertaintyState, uncertainty

# Every method factory, by the name used in configs.
METHODS = (
    "dwa",
    "equal",
    "famo",
    "fixed",
    "gls",
    "gradnorm",
    "gradvac",
    "mgda",
    "rlw",
    "scale_invariant",
    "stch",
    "uncertainty",
)

__all__ = [
    "GRAMIAN",
    "JACOBIAN",
    "KINDS",
    "LOSS",
    "METHODS",
    "DWAState",
    "EqualState",
    "FAMOState",
    "FixedState",
    "GLSState",
    "GradNormState",
    "GradVacState",
    "MGDAState",
    "MinNormResult",
    "RLWState",
    "STCHState",
    "ScaleInvariantState",
    "UncertaintyState",
    "Weighting",
    "aggregate",
    "create",
    "default_task_names",
    "dwa",
    "equal",
    "famo",
    "fixed",
    "gls",
    "gradnorm",
    "gradvac",
    "mgda",
    "min_norm_simplex",
    "rlw",
    "scale_invariant",
    "stch",
    "uncertainty",
]


def create(name: str, **kwargs: Any) -> Weighting:
    """Builds method `name` with hyper-parameters `kwargs`, checking both first.

    Raises:
      ValueError: for an unknown name or keyword; the message lists the valid ones.
    """
    if name not in METHODS:
        raise ValueError(f"unknown weighting method {name!r}; valid methods: {list(METHODS)}")
    factory = getattr(sys.modules[__name__], name)
    valid = list(inspect.signature(factory).parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"weighting method {name!r} has no option(s) {unknown}; valid options: {valid}"
        )
    return factory(**kwargs)
