"""Per-layer gradient conflict (`mtl_jax.explain.conflict`): the logged per-block cosines
are those of each task's `jax.grad` restricted to the block; opposite and equal blocks
give −1 and +1; a run with `conflict_every_steps` logs them and draws
`conflict_by_layer.png` without changing anything else, bit for bit, also when resumed."""

from __future__ import annotations

import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import cli, weighting
from mtl_jax import workdir as wd
from mtl_jax.config import ConfigError, load_config
from mtl_jax.experiment import build_experiment
from mtl_jax.explain import conflict as cf
from mtl_jax.jacobian import loss_vector
from mtl_jax.models import MultiTaskModel
from mtl_jax.tasks import Task
from mtl_jax.train import create_train_state, step_keys
from tests.cli import checkpoint_arrays, metrics_records
from tests.helpers import multi_mnist_setup

LENET_BLOCKS = ("Conv_0", "Conv_1", "Dense_0")
FIELDS = ("conflict_by_layer", "conflict_cosine_by_layer")


def _cosines(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1)
    return rows @ rows.T / np.outer(norms, norms)


def test_per_block_cosines_are_those_of_each_tasks_gradient_restricted_to_the_block():
    tasks, model, variables, batch = multi_mnist_setup(batch_size=8)
    params, stats = variables["params"], variables["batch_stats"]
    cosines = cf.layer_cosines(model, tasks, params, stats, batch)
    ids, names = cf.blocks_of(model, params["shared"], stats["shared"], batch["image"])
    assert names == LENET_BLOCKS and cosines.shape == (3, 3, 3)

    def loss(shared, t):
        variables = {"params": {**params, "shared": shared}, "batch_stats": stats}
        preds, _ = model.apply(variables, batch["image"], train=True)
        return loss_vector(tasks, preds, batch)[t]

    grads = [jax.grad(loss)(params["shared"], t) for t in range(3)]  # sorted task order
    for block, name in enumerate(names):
        rows = np.stack(
            [np.concatenate([np.ravel(g[name][k]) for k in sorted(g[name])]) for g in grads]
        ).astype(np.float64)
        np.testing.assert_allclose(cosines[block], _cosines(rows), atol=2e-5)
    # The blocks partition the whole gradient: its Gramian is the sum of theirs.
    assert sorted(set(ids)) == [0, 1, 2]


class _Value(Task):
    """A task whose loss is its (scalar) prediction."""

    @property
    def output_shape(self):
        return (1,)

    @property
    def target_shape(self):
        return ()

    def loss(self, pred, target, valid):
        del target
        return pred[:, 0], valid


class _TwoBranches(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = True):
        del train
        x = x.reshape((x.shape[0], -1))
        return jnp.concatenate([nn.Dense(1, name="a")(x), nn.Dense(1, name="b")(x)], axis=-1)


class _Signed(nn.Module):
    """`sign · r_a + r_b`: with signs +1 and −1 the tasks' gradients are opposite in
    block a and equal in block b."""

    sign: float

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        del train
        scale = self.param("scale", nn.initializers.ones, ())
        return scale * (self.sign * rep[:, :1] + rep[:, 1:])


def test_opposite_block_gives_minus_one_and_equal_block_plus_one():
    tasks = {"down": _Value("down"), "up": _Value("up")}
    model = MultiTaskModel(trunk=_TwoBranches(), heads={"down": _Signed(-1.0), "up": _Signed(1.0)})
    image = jnp.asarray(np.random.default_rng(0).random((4, 3, 3, 1)), jnp.float32)
    batch = {"image": image, "targets": {"down": jnp.zeros(4), "up": jnp.zeros(4)}}
    variables = model.init(jax.random.PRNGKey(0), image)
    cosines = cf.layer_cosines(model, tasks, variables["params"], variables["batch_stats"], batch)
    _, names = cf.blocks_of(
        model, variables["params"]["shared"], variables["batch_stats"]["shared"], image
    )
    assert names == ("a", "b")
    np.testing.assert_allclose(cosines[0], [[1, -1], [-1, 1]], atol=1e-6)
    np.testing.assert_allclose(cosines[1], [[1, 1], [1, 1]], atol=1e-6)
    record = cf.conflict_record(np.asarray(cosines), names)
    assert record["conflict_by_layer"] == pytest.approx({"a": -1.0, "b": 1.0}, abs=1e-6)
    assert set(record["conflict_cosine_by_layer"]) == {"a", "b"}
    assert np.asarray(record["conflict_cosine_by_layer"]["a"]).shape == (2, 2)


def test_block_names_per_blocking():
    _, model, variables, batch = multi_mnist_setup(batch_size=2)
    shared, stats = variables["params"]["shared"], variables["batch_stats"]["shared"]
    name = lambda blocking: cf.blocks_of(model, shared, stats, batch["image"], blocking)[1]  # noqa: E731
    assert name("layer") == LENET_BLOCKS
    assert name("whole") == ("all",) and name("last_layer") == ("rest", "Dense_0")
    assert name("tensor") == tuple(f"{b}/{k}" for b in LENET_BLOCKS for k in ("bias", "kernel"))
    with pytest.raises(ValueError, match="blocks must be one of"):
        name("module")


def test_conflict_log_runs_beside_the_step_on_its_state_and_batch():
    tasks, model, _, batch = multi_mnist_setup(batch_size=8)
    method = weighting.create("equal")
    state = create_train_state(model, optax.sgd(0.1), method, batch["image"], seed=3)
    state = state._replace(step=jnp.asarray(4, jnp.int32))  # the state that takes step 5
    log = cf.ConflictLog(
        jax.jit(cf.make_conflict_step(model, tasks)), model=model, every=5, first=5
    )
    calls = []
    step = log.wrap(lambda s, b: calls.append(int(s.step)) or (s._replace(step=s.step + 1), {}))
    for _ in range(6):  # steps 5 ... 10
        state, _ = step(state, batch)
    assert calls == [4, 5, 6, 7, 8, 9]
    assert log.fields(6) == {} and log.blocks == LENET_BLOCKS
    fields = log.fields(5)
    rng = step_keys(jnp.asarray(state.rng), jnp.asarray(4, jnp.int32)).model
    expected = cf.layer_cosines(model, tasks, state.params, state.batch_stats, batch, rng=rng)
    reference = cf.conflict_record(np.asarray(expected), LENET_BLOCKS)  # unjitted: rounding
    assert set(fields) == set(reference) == set(FIELDS)
    for key in FIELDS:
        assert list(fields[key]) == list(LENET_BLOCKS)
        for block in LENET_BLOCKS:
            np.testing.assert_allclose(fields[key][block], reference[key][block], atol=1e-6)
    assert set(log.fields(10)) == set(FIELDS)
    with pytest.raises(ValueError, match="every must be >= 1"):
        cf.ConflictLog(lambda s, b: {}, model=model, every=0, first=1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["conflict_every_steps=3", "log_every_steps=2"], "a multiple of log_every_steps"),
        (["conflict_every_steps=-2"], "must be 0 (off) or a multiple"),
        (["conflict_every_steps=1", "tasks=left"], "needs two tasks or more"),
    ],
)
def test_invalid_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_experiment(load_config("test", overrides))


def test_runs_saved_before_the_key_existed_still_match():
    config = load_config("test")
    saved = wd.config_record(config)
    del saved["conflict_every_steps"]
    assert wd.config_differences(saved, wd.config_record(config)) == []
    config.conflict_every_steps = 2
    assert wd.config_differences(saved, wd.config_record(config)) == [
        "conflict_every_steps: saved 0, now 2"
    ]


# ---------------------------------------------------------------------------------------
# End to end: the `test` config for 6 steps, a checkpoint every 2.

ARGS = ("--config.num_steps=6", "--config.checkpoint_every_steps=2", "--config.keep_checkpoints=5")


def _train(workdir, *args: str) -> None:
    argv = ["train", "--config", "test", "--workdir", str(workdir), "--no-progress", *ARGS]
    assert cli.main([*argv, *args]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_multi_mnist):
    """(without conflict logging, with it every 2 steps), in process."""
    root = tmp_path_factory.mktemp("conflict")
    _train(root / "off")
    _train(root / "on", "--config.conflict_every_steps=2")
    return root / "off", root / "on"


def test_a_run_logs_the_conflict_and_draws_it(runs):
    _, on = runs
    lines = [r for r in metrics_records(on) if "loss" in r]
    assert [r["step"] for r in lines if "conflict_by_layer" in r] == [2, 4, 6]
    for line in lines:
        if line["step"] % 2:
            assert not set(FIELDS) & set(line)
            continue
        means, pairs = line["conflict_by_layer"], line["conflict_cosine_by_layer"]
        assert tuple(means) == tuple(pairs) == LENET_BLOCKS
        for block, matrix in pairs.items():
            matrix = np.asarray(matrix)
            assert matrix.shape == (3, 3)
            np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)
            np.testing.assert_allclose(matrix, matrix.T)
            assert means[block] == pytest.approx(matrix[np.triu_indices(3, 1)].mean())
            assert np.all(np.abs(matrix) <= 1 + 1e-5)
    assert (on / "conflict_by_layer.png").stat().st_size > 10_000
    log = (on / "train.log").read_text()
    assert "conflict_by_layer/Conv_0=" in log


def test_the_conflict_changes_nothing_else_bit_for_bit(runs):
    off, on = runs
    assert not (off / "conflict_by_layer.png").exists()
    records_off = metrics_records(off)
    assert not any(set(FIELDS) & set(r) for r in records_off)
    stripped = [{k: v for k, v in r.items() if k not in FIELDS} for r in metrics_records(on)]
    assert stripped == records_off
    assert (off / wd.PARAMS_FILE).read_bytes() == (on / wd.PARAMS_FILE).read_bytes()
    for step in (2, 4, 6):
        a, b = checkpoint_arrays(off, step), checkpoint_arrays(on, step)
        assert set(a) == set(b)
        assert all(a[k].tobytes() == b[k].tobytes() for k in a), step
    results = [json.loads((w / wd.RESULTS_FILE).read_text()) for w in runs]
    assert results[0]["final"] == results[1]["final"]


def test_a_resumed_run_logs_the_same_conflict(runs, tmp_path):
    """Interrupted after the checkpoint of step 2 (the later checkpoints and the final
    files gone), the rerun writes the uninterrupted run's records and parameters."""
    _, on = runs
    resumed = tmp_path / "resumed"
    shutil.copytree(on, resumed)
    for name in (wd.RESULTS_FILE, wd.PARAMS_FILE):
        (resumed / name).unlink()
    for step in (4, 6):
        shutil.rmtree(resumed / wd.CHECKPOINT_DIR / str(step))
    _train(resumed, "--config.conflict_every_steps=2")
    results = json.loads((resumed / wd.RESULTS_FILE).read_text())
    assert results["resumed_from"] == 2
    assert metrics_records(resumed) == metrics_records(on)
    assert (resumed / wd.PARAMS_FILE).read_bytes() == (on / wd.PARAMS_FILE).read_bytes()
