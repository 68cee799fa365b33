"""Using mtl_jax without editing it: a user's method, model and dataset by import path,
warm starts from a finished run, and finished runs read back."""

from __future__ import annotations

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax
from mtl_jax import cli, weighting
from mtl_jax import workdir as wd
from mtl_jax.config import ConfigError, load_config
from mtl_jax.experiment import build_experiment, load_run
from mtl_jax.experiment.warm_start import warm_start
from mtl_jax.train import create_train_state

USER_MODULE = '''
import jax.numpy as jnp
from typing import NamedTuple

from mtl_jax.models import build_model
from mtl_jax.weighting import LOSS, Weighting


class State(NamedTuple):
    pass


def first_task_heavy(*, factor: float = 3.0) -> Weighting:
    """Weight `factor` on the first task (sorted order), 1 on the others."""

    def init(task_names):
        return State()

    def update(losses, state, *, key, gramian=None, rows=None):
        weights = jnp.ones(losses.shape[0], jnp.float32).at[0].set(factor)
        return weights, state, {}

    return Weighting(init=init, update=update, kind=LOSS)


def not_a_method():
    return 3


def small_lenet(tasks, *, dtype):
    return build_model("lenet", tasks, head_hidden=(8,), dtype=dtype)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_mtl.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_mtl"


def test_user_method_by_import_path_runs_from_the_cli(tmp_path, user_module, tiny_multi_mnist):
    workdir = tmp_path / "run"
    argv = [
        "train",
        "--config",
        "test",
        "--workdir",
        str(workdir),
        "--no-progress",
        f"--config.weighting.name={user_module}:first_task_heavy",
        "--config.weighting.kwargs.factor=2.5",
        f"--config.model.trunk={user_module}:small_lenet",
        "--config.num_steps=3",
        "--config.log_every_steps=1",
        "--config.eval_every_steps=0",
    ]
    assert cli.main(argv) == 0
    records = [r for r in wd.read_metrics(workdir / wd.METRICS_FILE) if "weights" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:  # sorted task order: boundary, left, right
        assert record["weights"] == {"boundary": 2.5, "left": 1.0, "right": 1.0}
    loaded = mtl_jax.load_run(workdir)
    assert loaded.config.weighting.name == f"{user_module}:first_task_heavy"
    assert loaded.variables["params"]["tasks"]["left"]["Dense_0"]["kernel"].shape[-1] == 8
    images = np.zeros((2, 28, 28, 1), np.float32)
    preds, _ = loaded.model.apply(loaded.variables, images)
    assert preds["left"].shape == (2, 10)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("weighting.name={m}:first_task_heavy", None),
        ("weighting.name={m}:missing", r"'weighting.name'.*module 'user_mtl' has no 'missing'"),
        ("weighting.name=no_such_pkg:f", r"cannot import module 'no_such_pkg'"),
        ("weighting.name={m}:not_a_method", r"returned int, not a mtl_jax.weighting.Weighting"),
        ("model.trunk={m}:missing", r"'model.trunk'.*has no 'missing'"),
        ("dataset.name={m}:small_lenet", r"'dataset.name'.*not a mtl_jax.data.DatasetSpec"),
    ],
)
def test_import_path_errors_name_the_key(user_module, override, message):
    config = load_config("test", [override.format(m=user_module)])
    if message is None:
        assert build_experiment(config).weighting.kind == weighting.LOSS
        return
    with pytest.raises(ConfigError, match=message):
        build_experiment(config)


def test_user_method_options_are_checked(user_module):
    with pytest.raises(ValueError, match=r"no option\(s\) \['fator'\] \('fator': did you mean"):
        weighting.create(f"{user_module}:first_task_heavy", fator=2.0)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_multi_mnist):
    workdir = tmp_path_factory.mktemp("extension") / "run"
    argv = ["train", "--config", "test", "--workdir", str(workdir), "--no-progress"]
    assert cli.main([*argv, "--config.num_steps=4", "--config.eval_every_steps=0"]) == 0
    return workdir


def _state(config):
    exp = build_experiment(config)
    image = jnp.zeros((2, 28, 28, 1), jnp.float32)
    return create_train_state(exp.model, exp.tx, exp.weighting, image, seed=config.seed + 1)


def test_warm_start_takes_the_saved_variables(finished_run):
    saved = load_run(finished_run).variables
    config = load_config("test", ["tasks=left,right"])  # a subset of the run's tasks
    state, fresh = warm_start(_state(config), finished_run)
    assert fresh == []
    assert set(state.params["tasks"]) == {"left", "right"}
    for collection in ("params", "batch_stats"):
        got = jax.tree.map(np.asarray, getattr(state, collection))
        want = {"shared": saved[collection]["shared"], "tasks": {}}
        want["tasks"] = {t: saved[collection]["tasks"][t] for t in ("left", "right")}
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_warm_start_rejects_another_model_naming_the_leaf(finished_run, tmp_path):
    config = load_config("test", ["model.head_hidden=(7,)"])
    with pytest.raises(ValueError, match=r"task 'boundary'|task 'left'") as info:
        warm_start(_state(config), finished_run)
    assert "in the saved variables" in str(info.value)
    with pytest.raises(FileNotFoundError, match="not a finished run's workdir"):
        warm_start(_state(load_config("test")), tmp_path)


def test_init_from_a_run_starts_from_its_variables(finished_run, tmp_path):
    workdir = tmp_path / "warm"
    argv = ["train", "--config", "test", "--workdir", str(workdir), "--no-progress"]
    extra = [f"--config.model.init_from={finished_run}", "--config.num_steps=1"]
    assert cli.main([*argv, *extra, "--config.eval_every_steps=0"]) == 0
    first = wd.read_metrics(workdir / wd.METRICS_FILE)[0]
    last = [r for r in wd.read_metrics(finished_run / wd.METRICS_FILE) if "loss" in r][-1]
    # Started from the trained variables: the first loss is near the run's last ones,
    # far below a fresh LeNet's ln(10) ≈ 2.30 on the digits.
    assert first["loss"]["left"] < last["loss"]["left"] + 0.3
    log = (workdir / wd.LOG_FILE).read_text()
    assert f"variables from {str(finished_run)!r}" in log
    config = json.loads((workdir / wd.CONFIG_FILE).read_text())
    assert config["model"]["init_from"] == str(finished_run)
