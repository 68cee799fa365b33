"""`config.optimizer`: global-norm clipping and the reduce-on-plateau schedule."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import base
from mtl_jax import weighting
from mtl_jax import workdir as wd
from mtl_jax.config import ConfigError
from mtl_jax.experiment import builders, learning_rate_schedule, make_optimizer
from mtl_jax.train import create_train_state, make_train_step
from tests.cli import assert_bitwise_equal_runs, compile_cache, metrics_records, run_cli
from tests.helpers import multi_mnist_setup

PARAMS = {"a": jnp.arange(6.0).reshape(2, 3), "b": {"c": jnp.ones(4)}}
GRADS = {"a": jnp.full((2, 3), 3.0), "b": {"c": -jnp.arange(4.0)}}  # global norm ~8.6


def config_of(**optimizer):
    config = base.get_config()
    config.optimizer.update(optimizer)
    return config


def reference_optimizer(config) -> optax.GradientTransformation:
    """`make_optimizer` as it was before clipping and plateau existed."""
    opt, lr = config.optimizer, learning_rate_schedule(config)
    if opt.name == "adam":
        return optax.adam(lr)
    if opt.name == "adamw":
        return optax.adamw(lr, weight_decay=opt.weight_decay)
    return optax.sgd(lr, momentum=opt.momentum or None)


def updates_of(tx, grads_seq, params=PARAMS, **extra):
    state = tx.init(params)
    out = []
    for grads in grads_seq:
        updates, state = tx.update(grads, state, params, **extra)
        out.append(updates)
    return out, state


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "options",
    [
        {"name": "adam", "schedule": "cosine", "warmup_steps": 3},
        {"name": "adamw", "schedule": "constant", "weight_decay": 0.1},
        {"name": "sgd", "schedule": "step", "decay_every_steps": 2, "momentum": 0.9},
        {"name": "sgd", "schedule": "constant"},
    ],
)
def test_without_new_options_the_optimizer_is_todays(options):
    """Clipping off and no plateau: the bare optimizer, so old checkpoints restore."""
    config = config_of(**options)
    tx, ref = make_optimizer(config), reference_optimizer(config)
    assert jax.tree.structure(tx.init(PARAMS)) == jax.tree.structure(ref.init(PARAMS))
    grads = [jax.tree.map(lambda g, i=i: g * (i + 1), GRADS) for i in range(4)]
    (got, got_state), (want, want_state) = updates_of(tx, grads), updates_of(ref, grads)
    assert_trees_equal(got, want)
    assert_trees_equal(got_state, want_state)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_clipping_applies_the_optimizer_to_the_clipped_gradient(name):
    config = config_of(name=name, schedule="constant", clip_global_norm=1.5, momentum=0.9)
    norm = optax.global_norm(GRADS)
    assert norm > 1.5
    clipped = jax.tree.map(lambda g: g * (1.5 / norm), GRADS)
    small = jax.tree.map(lambda g: g * 0.01, GRADS)  # under the norm: untouched
    got, _ = updates_of(make_optimizer(config), [GRADS, small])
    want, _ = updates_of(reference_optimizer(config), [clipped, small])
    for g, w in zip(got, want, strict=True):
        for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(w), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9)


def test_invalid_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"'optimizer.clip_global_norm' must be >= 0"):
        make_optimizer(config_of(clip_global_norm=-1.0))
    with pytest.raises(ConfigError, match=r"'optimizer.schedule'.*'plateau'"):
        make_optimizer(config_of(schedule="linear"))
    bad = {
        "plateau_factor": (1.0, "plateau_factor"),
        "plateau_patience": (0, "plateau_patience"),
        "plateau_cooldown": (-1, "plateau_cooldown"),
        "plateau_accumulation_steps": (0, "plateau_accumulation_steps"),
        "plateau_rtol": (0.0, "plateau_rtol"),
    }
    for key, (value, name) in bad.items():
        with pytest.raises(ConfigError, match=rf"'optimizer.{name}'"):
            make_optimizer(config_of(schedule="plateau", **{key: value}))


def test_new_keys_are_added_keys_with_their_defaults():
    opt = base.get_config().optimizer
    for key in (
        "clip_global_norm",
        "plateau_factor",
        "plateau_patience",
        "plateau_cooldown",
        "plateau_accumulation_steps",
        "plateau_rtol",
    ):
        assert wd.ADDED_KEYS[f"optimizer.{key}"] == opt[key]
    saved = wd.config_record(base.get_config())
    for key in [k for k in saved["optimizer"] if k == "clip_global_norm" or "plateau" in k]:
        del saved["optimizer"][key]
    assert wd.config_differences(saved, wd.config_record(base.get_config())) == []


def test_plateau_scale_drops_by_factor_after_patience_windows():
    options = {
        "plateau_factor": 0.5,
        "plateau_patience": 2,
        "plateau_accumulation_steps": 3,
        "plateau_cooldown": 1,
    }
    config = config_of(name="sgd", schedule="plateau", learning_rate=0.1, **options)
    tx = make_optimizer(config)
    direct = optax.chain(
        optax.sgd(0.1),
        optax.contrib.reduce_on_plateau(
            factor=0.5, patience=2, accumulation_size=3, cooldown=1, rtol=1e-4
        ),
    )
    # Windows of 3 steps: improving, then flat from the third window on.
    losses = [3.0, 3.0, 3.0, 2.0, 2.0, 2.0] + [2.0] * 18
    state, ref_state = tx.init(PARAMS), direct.init(PARAMS)
    # Finite from the start (the train step's guard rejects a non-finite optimizer state).
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))
    scales = []
    for loss in losses:
        updates, state = tx.update(GRADS, state, PARAMS, value=jnp.asarray(loss))
        want, ref_state = direct.update(GRADS, ref_state, PARAMS, value=jnp.asarray(loss))
        assert_trees_equal(updates, want)
        scale = float(builders.plateau_scale(state))
        assert_trees_equal(updates, jax.tree.map(lambda g, s=scale: -0.1 * s * g, GRADS))
        scales.append(scale)
    # Window ends at steps 3, 6 (improving), 9, 12 (patience 2: halve at 12), 15 (cooldown),
    # 18, 21 (halve at 21).
    expected = [1.0] * 11 + [0.5] * 9 + [0.25] * 4
    assert scales == expected
    assert builders.plateau_scale(make_optimizer(config_of()).init(PARAMS)) is None


def test_train_step_passes_the_loss_sum_only_when_asked():
    tasks, model, _, batch = multi_mnist_setup()
    method = weighting.create("equal")

    def reject_extra_args(updates, state, params=None):  # a TypeError on any `value=`
        return jax.tree.map(jnp.zeros_like, updates), state

    plain = optax.GradientTransformation(lambda p: (), reject_extra_args)
    state = create_train_state(model, plain, method, batch["image"], seed=0)
    make_train_step(model, tasks, plain, method, jit=False)(state, batch)

    def record_value(updates, state, params=None, *, value, **extra):
        return jax.tree.map(jnp.zeros_like, updates), value

    recorder = optax.GradientTransformationExtraArgs(lambda p: jnp.zeros(()), record_value)
    state = create_train_state(model, recorder, method, batch["image"], seed=0)
    new_state, metrics = make_train_step(model, tasks, recorder, method, loss_value=True)(
        state, batch
    )
    np.testing.assert_allclose(new_state.opt_state, jnp.sum(metrics["loss"]), rtol=1e-6)
    assert builders.step_options(config_of(schedule="plateau"))["loss_value"] is True
    assert builders.step_options(config_of())["loss_value"] is False


# Plateau on the tiny run: rtol=1 never counts an improvement, so with windows of 2 steps
# and patience 2 the scale halves at steps 4, 8, 12, ...
PLATEAU = (
    "--config.optimizer.schedule=plateau",
    "--config.optimizer.plateau_factor=0.5",
    "--config.optimizer.plateau_patience=2",
    "--config.optimizer.plateau_accumulation_steps=2",
    "--config.optimizer.plateau_rtol=1.0",
    "--config.optimizer.clip_global_norm=1.0",
    "--config.weighting.name=uncertainty",
)
KILL_AT_13 = """
import mtl_jax.experiment.records as _records
_record = _records.train_record
def _hooked_record(step, *args, **kwargs):
    if step == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return _record(step, *args, **kwargs)
_records.train_record = _hooked_record
"""


def logged_lr(workdir) -> dict[int, float]:
    lines = (workdir / "train.log").read_text().splitlines()
    found = (re.search(r"step (\d+)\b.*\blr=(\S+)", line) for line in lines)
    return {int(m[1]): float(m[2]) for m in found if m}


def test_plateau_run_logs_the_scaled_rate_and_resumes_bitwise(
    tmp_path_factory, tiny_multi_mnist, data_dir
):
    cache = compile_cache(tmp_path_factory)
    reference = tmp_path_factory.mktemp("plateau") / "run"
    result = run_cli(reference, *PLATEAU, data_dir=data_dir, cache_dir=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in metrics_records(reference) if "loss" in r] == list(range(1, 31))
    lr = logged_lr(reference)
    assert sorted(lr) == list(range(1, 31))
    for step, rate in lr.items():
        assert rate == pytest.approx(1e-3 * 0.5 ** (step // 4), rel=1e-6), step

    workdir = tmp_path_factory.mktemp("plateau_killed") / "run"
    killed = run_cli(workdir, *PLATEAU, data_dir=data_dir, cache_dir=cache, hook=KILL_AT_13)
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_cli(workdir, *PLATEAU, data_dir=data_dir, cache_dir=cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoints/10" in resumed.stderr
    assert_bitwise_equal_runs(reference, workdir, 30)
    assert logged_lr(workdir) == lr


@pytest.mark.parametrize(
    "options", [{"name": "adam"}, {"name": "sgd", "momentum": 0.9}], ids=["adam", "sgd"]
)
def test_weight_decay_of_adam_and_sgd_is_l2_added_to_the_gradient(options):
    """torch.optim.Adam / SGD's `weight_decay`: the optimizer sees `g + wd·θ`."""
    decay = 0.01
    config = config_of(schedule="constant", weight_decay=decay, **options)
    tx, bare = (
        make_optimizer(config),
        reference_optimizer(config_of(schedule="constant", **options)),
    )
    grads = [jax.tree.map(lambda g, i=i: g * (i + 1), GRADS) for i in range(3)]
    got, _ = updates_of(tx, grads)
    # The same parameters every step (`updates_of` does not apply the updates).
    want, _ = updates_of(bare, [jax.tree.map(lambda g, p: g + decay * p, g, PARAMS) for g in grads])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
    undecayed, _ = updates_of(bare, grads)
    # Adam's first update is scale-free (±lr where a coordinate's g is not 0), the later
    # ones see the decay.
    assert not np.allclose(np.asarray(got[-1]["a"]), np.asarray(undecayed[-1]["a"]))


def test_negative_weight_decay_names_the_key():
    with pytest.raises(ConfigError, match="'optimizer.weight_decay' must be >= 0"):
        make_optimizer(config_of(weight_decay=-1e-5))
