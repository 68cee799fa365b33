"""Task-weighting methods: each a factory returning `Weighting(init, update, kind)`.

Look a method up by name with `create(name, **kwargs)` (or `getattr` on this module);
`METHODS` lists every name. `create("my_pkg.my_module:my_method", ...)` builds a user's own
method from its import path, with the same option checks.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from mtl_jax import import_path
from mtl_jax.weighting._aggregate import aggregate, default_task_names
from mtl_jax.weighting._aligned_mtl import AlignedMTLState, aligned_mtl
from mtl_jax.weighting._base import GRAMIAN, JACOBIAN, KINDS, LOSS, Weighting
from mtl_jax.weighting._cagrad import CAGradState, cagrad
from mtl_jax.weighting._config import ConFIGState, config
from mtl_jax.weighting._cr_mogm import CRMOGMState, cr_mogm
from mtl_jax.weighting._db_mtl import DBMTLState, db_mtl
from mtl_jax.weighting._dual_cone import DualConeResult, project_onto_dual_cone
from mtl_jax.weighting._dualproj import DualProjState, dualproj
from mtl_jax.weighting._dwa import DWAState, dwa
from mtl_jax.weighting._equal import EqualState, equal
from mtl_jax.weighting._excess_mtl import ExcessMTLState, excess_mtl
from mtl_jax.weighting._fairgrad import FairGradState, fairgrad
from mtl_jax.weighting._famo import FAMOState, famo
from mtl_jax.weighting._fixed import FixedState, fixed
from mtl_jax.weighting._gls import GLSState, gls
from mtl_jax.weighting._graddrop import GradDropState, graddrop
from mtl_jax.weighting._gradnorm import GradNormState, gradnorm
from mtl_jax.weighting._gradvac import GradVacState, gradvac
from mtl_jax.weighting._imtl import IMTLState, imtl
from mtl_jax.weighting._imtl_g import IMTLGState, imtl_g
from mtl_jax.weighting._imtl_l import IMTLLState, imtl_l
from mtl_jax.weighting._krum import KrumState, krum
from mtl_jax.weighting._mgda import MGDAState, mgda
from mtl_jax.weighting._min_norm import MinNormResult, min_norm_simplex
from mtl_jax.weighting._moco import MoCoState, moco
from mtl_jax.weighting._modo import MoDoState, modo
from mtl_jax.weighting._nash_mtl import NashMTLState, nash_mtl
from mtl_jax.weighting._pbi import PBIState, pbi
from mtl_jax.weighting._pcd import PCDState, pcd
from mtl_jax.weighting._pcgrad import PCGradState, pcgrad
from mtl_jax.weighting._rlw import RLWState, rlw
from mtl_jax.weighting._scale_invariant import ScaleInvariantState, scale_invariant
from mtl_jax.weighting._sdmgrad import SDMGradState, sdmgrad
from mtl_jax.weighting._stch import STCHState, stch
from mtl_jax.weighting._trimmed_mean import TrimmedMeanState, trimmed_mean
from mtl_jax.weighting._uncertainty import UncertaintyState, uncertainty
from mtl_jax.weighting._upgrad import UPGradState, upgrad

# Every method factory, by the name used in configs.
METHODS = (
    "aligned_mtl",
    "cagrad",
    "config",
    "cr_mogm",
    "db_mtl",
    "dualproj",
    "dwa",
    "equal",
    "excess_mtl",
    "fairgrad",
    "famo",
    "fixed",
    "gls",
    "graddrop",
    "gradnorm",
    "gradvac",
    "imtl",
    "imtl_g",
    "imtl_l",
    "krum",
    "mgda",
    "moco",
    "modo",
    "nash_mtl",
    "pbi",
    "pcd",
    "pcgrad",
    "rlw",
    "scale_invariant",
    "sdmgrad",
    "stch",
    "trimmed_mean",
    "uncertainty",
    "upgrad",
)

__all__ = [
    "GRAMIAN",
    "JACOBIAN",
    "KINDS",
    "LOSS",
    "METHODS",
    "AlignedMTLState",
    "CAGradState",
    "CRMOGMState",
    "ConFIGState",
    "DBMTLState",
    "DWAState",
    "DualConeResult",
    "DualProjState",
    "EqualState",
    "ExcessMTLState",
    "FAMOState",
    "FairGradState",
    "FixedState",
    "GLSState",
    "GradDropState",
    "GradNormState",
    "GradVacState",
    "IMTLGState",
    "IMTLLState",
    "IMTLState",
    "KrumState",
    "MGDAState",
    "MinNormResult",
    "MoCoState",
    "MoDoState",
    "NashMTLState",
    "PBIState",
    "PCDState",
    "PCGradState",
    "RLWState",
    "SDMGradState",
    "STCHState",
    "ScaleInvariantState",
    "TrimmedMeanState",
    "UPGradState",
    "UncertaintyState",
    "Weighting",
    "aggregate",
    "aligned_mtl",
    "cagrad",
    "config",
    "cr_mogm",
    "create",
    "db_mtl",
    "default_task_names",
    "dualproj",
    "dwa",
    "equal",
    "excess_mtl",
    "factory",
    "fairgrad",
    "famo",
    "fixed",
    "gls",
    "graddrop",
    "gradnorm",
    "gradvac",
    "imtl",
    "imtl_g",
    "imtl_l",
    "krum",
    "mgda",
    "min_norm_simplex",
    "moco",
    "modo",
    "nash_mtl",
    "pbi",
    "pcd",
    "pcgrad",
    "project_onto_dual_cone",
    "rlw",
    "scale_invariant",
    "sdmgrad",
    "stch",
    "trimmed_mean",
    "uncertainty",
    "upgrad",
]


def factory(name: str) -> Callable[..., Weighting]:
    """The factory of method `name`: a built-in (`METHODS`) or a user's own, named by import
    path `"package.module:factory"` (used from a config without editing the library).

    Raises:
      ValueError: for an unknown name (suggesting the closest) or a path that does not
        import or does not name a callable.
    """
    if import_path.is_import_path(name):
        found = import_path.load(name, what="weighting method")
        if not callable(found):
            raise ValueError(f"weighting method {name!r} is not callable: {found!r}")
        return found
    if name not in METHODS:
        raise ValueError(import_path.unknown_name(name, METHODS, what="weighting method"))
    return getattr(sys.modules[__name__], name)


def create(name: str, **kwargs: Any) -> Weighting:
    """Builds method `name` (see `factory`) with hyper-parameters `kwargs`, checking both
    first.

    Raises:
      ValueError: for an unknown name or keyword (the message lists the valid ones), or a
        user factory that does not return a `Weighting`.
    """
    build = factory(name)
    parameters = inspect.signature(build).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown and not takes_any:
        close = {
            key: difflib.get_close_matches(key, list(parameters), n=1, cutoff=0.6)
            for key in unknown
        }
        hints = "".join(f" ({key!r}: did you mean {c[0]!r}?)" for key, c in close.items() if c)
        raise ValueError(
            f"weighting method {name!r} has no option(s) {unknown}{hints}; "
            f"valid options: {list(parameters)}"
        )
    method = build(**kwargs)
    if not isinstance(method, Weighting):
        raise ValueError(
            f"weighting method {name!r} returned {type(method).__name__}, not a "
            "mtl_jax.weighting.Weighting"
        )
    return method
