"""mtl_jax: multi-task learning in JAX/Flax.

Task-weighting methods (`mtl_jax.weighting`), the per-task gradient engine
(`mtl_jax.jacobian`), models, tasks, datasets and a jitted trainer.
`mtl_jax.load_run(workdir)` reads a finished run back (it needs the `experiments` extra
and is imported only when used, so `import mtl_jax` stays light).
"""

from typing import Any

# The one place the version is written: pyproject.toml reads it (setuptools dynamic version).
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load_run":
        from mtl_jax.experiment.loading import load_run

        return load_run
    raise AttributeError(f"module 'mtl_jax' has no attribute {name!r}")
