"""mtl_jax: multi-task learning in JAX/Flax.

Task-weighting methods (`mtl_jax.weighting`), the per-task gradient engine
(`mtl_jax.jacobian`), models, tasks, datasets and a jitted trainer.
"""

# The one place the version is written: pyproject.toml reads it (setuptools dynamic version).
__version__ = "0.1.0"
