"""Multi-process start-up: `jax.distributed.initialize()` when the environment asks for it.

Kept apart from the rest of the library so that it can run before anything touches the
devices (`experiments/main.py` calls it first).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax


def distributed_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The `jax.distributed.initialize` arguments a multi-process environment asks for.

    Recognised: `JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`
    (explicit), and SLURM or Open MPI jobs of more than one task (JAX detects their
    parameters itself).

    Returns:
      The keyword arguments (possibly empty, for auto-detection), or None for a
      single-process run.

    Raises:
      ValueError: `JAX_COORDINATOR_ADDRESS` is set without the other two variables.
    """
    environ = os.environ if environ is None else environ
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in environ]
        if missing:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {missing} are not")
        return {
            "coordinator_address": environ["JAX_COORDINATOR_ADDRESS"],
            "num_processes": int(environ["JAX_NUM_PROCESSES"]),
            "process_id": int(environ["JAX_PROCESS_ID"]),
        }
    if "SLURM_JOB_ID" in environ and int(environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        return {}
    if int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return {}
    return None


def initialize_distributed(environ: Mapping[str, str] | None = None) -> bool:
    """Calls `jax.distributed.initialize()` once if `distributed_environment` asks for it.

    Must run before anything touches the devices. Returns whether the run is multi-process.
    """
    kwargs = distributed_environment(environ)
    if kwargs is None:
        return False
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(**kwargs)
    return True
