"""`config.pipeline`: auto values per backend, refused values, and no config difference."""

from __future__ import annotations

import pytest

from mtl_jax import workdir as wd
from mtl_jax.config import ConfigError, load_config
from mtl_jax.experiment.builders import build_experiment, pipeline_options


def test_auto_is_synchronous_on_the_cpu_and_explicit_values_are_kept():
    config = load_config("test")
    assert (config.pipeline.num_threads, config.pipeline.prefetch_to_device) == (-1, -1)
    assert pipeline_options(config) == (0, 0)  # the tests run on the CPU backend
    config.pipeline.num_threads, config.pipeline.prefetch_to_device = 3, 2
    assert pipeline_options(config) == (3, 2)


@pytest.mark.parametrize("key", ["num_threads", "prefetch_to_device"])
def test_values_below_minus_one_name_the_key_before_anything_is_built(key):
    config = load_config("test")
    config.pipeline[key] = -2
    with pytest.raises(ConfigError, match=f"'pipeline.{key}' is -2"):
        build_experiment(config)


def test_pipeline_keys_are_no_config_difference():
    config = load_config("test")
    saved = wd.config_record(config)
    config.pipeline.num_threads = 4
    config.seed = 7
    assert wd.config_differences(saved, wd.config_record(config)) == ["seed: saved 0, now 7"]
    del saved["pipeline"]  # a run saved before the section existed
    config.seed = 0
    assert wd.config_differences(saved, wd.config_record(config)) == []
