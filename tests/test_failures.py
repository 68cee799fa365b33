"""Failing loudly, losing nothing: one test per failure class of the experiment CLI.

Each asserts the exit status, that the message names the offending key, path, shape or
task, and that what was on disk before (the previous run, its checkpoints) is intact.
The CLI's `main` runs in this process (its return value is the process's exit status),
so failures before compilation cost no interpreter start.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from experiments.main import main
from mtl_jax import data, experiment, parallel, weighting
from mtl_jax.checkpointing import Checkpointer
from mtl_jax.config import load_config
from mtl_jax.train import create_train_state
from tests.cli import CONFIGS, run_cli
from tests.helpers import multi_mnist_setup

EXIT_INVALID, EXIT_NON_FINITE, EXIT_CHECKPOINT = 2, 3, 4


def run_main(workdir: Path, *args: str, config: str = "test.py") -> tuple[int, str]:
    """(exit status, stderr) of the CLI."""
    err = io.StringIO()
    argv = ["--config", str(CONFIGS / config), "--workdir", str(workdir), "--no-progress", *args]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def snapshot(directory: Path) -> dict[str, str]:
    """{relative path: SHA-256} of every file under `directory`."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


TRAINED_ARGS = ("--config.num_steps=10",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_multi_mnist, data_dir):
    """A finished 10-step run of the test config (checkpoints at steps 5 and 10)."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    code, err = run_main(workdir, *TRAINED_ARGS)
    assert code == 0, err
    return workdir


@pytest.fixture
def unfinished(trained, tmp_path):
    """A copy of the trained run as a process killed after its last checkpoint leaves it."""
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    (workdir / "results.json").unlink()
    (workdir / "params.msgpack").unlink()
    return workdir


# --- invalid input, before anything is compiled: exit 2, the previous run untouched ---


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config.optimizer.lr=0.1"], "unknown config key 'optimizer.lr'"),
        (["--config.weighting.name=nash"], r"method 'nash' \(did you mean 'nash_mtl'\?\)"),
        (["--config.num_steps=ten"], "config key 'num_steps' expects a int, got 'ten'"),
        (["--config.dtype=float16"], r"'dtype': dtype must be one of \['float32', 'bfloat16'\]"),
        (
            [
                "--config.weighting.name=fixed",
                "--config.weighting.kwargs.weights={'left': 1.0, 'right': 2.0}",
            ],
            r"\['left', 'right'\].*\['boundary', 'left', 'right'\]",
        ),
        (
            ["--config.num_steps=20"],
            r"holds a run of a different config \(num_steps: saved 10, now 20\).*--overwrite",
        ),
    ],
)
def test_invalid_input_leaves_the_run_untouched(unfinished, args, message):
    before = snapshot(unfinished)
    code, err = run_main(unfinished, *TRAINED_ARGS, *args)
    assert code == EXIT_INVALID
    assert re.search(message, err), err
    assert snapshot(unfinished) == before


def test_config_file_with_an_unknown_key_or_wrong_type(tmp_path):
    for line, message in [
        ("config.optimizer.lr = 0.1", "unknown config key 'optimizer.lr'"),
        ("config.batch_size = '64'", "'batch_size'"),
        ("config.model.head_hidden = 50", "'head_hidden'"),
        ("config.parallel.devices = 8", "unknown config key 'parallel.devices'"),
    ]:
        path = tmp_path / "bad.py"
        path.write_text(
            "from experiments.configs import test\n\n\n"
            f"def get_config():\n    config = test.get_config()\n    {line}\n    return config\n"
        )
        code, err = run_main(tmp_path / "run", config=str(path))
        assert code == EXIT_INVALID
        assert str(path) in err and message in err, err
        assert not (tmp_path / "run").exists()


def test_workdir_of_another_kind_is_refused(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("precious")
    code, err = run_main(workdir)
    assert code == EXIT_INVALID
    assert str(workdir) in err and "not empty" in err and "no config.json" in err
    assert (workdir / "notes.txt").read_text() == "precious"


def test_overwrite_discards_a_run_of_another_config(unfinished):
    (unfinished / "notes.txt").write_text("not an output")
    code, err = run_main(unfinished, "--config.num_steps=6", "--overwrite")
    assert code == 0, err
    results = json.loads((unfinished / "results.json").read_text())
    assert results["steps"] == 6 and results["resumed_from"] is None
    assert (unfinished / "notes.txt").read_text() == "not an output"  # not an output: kept
    with Checkpointer(unfinished / "checkpoints", max_to_keep=3) as checkpointer:
        assert checkpointer.all_steps() == [5, 6]


# --- bad data: exit 2 before compiling, naming split, task and shape; nothing written ---


def _mutations():
    def labels_out_of_range(a):
        a["left"] = a["left"].copy()
        a["left"][3] = 10

    def float_images(a):
        a["image"] = a["image"].astype(np.float32)

    def cropped_images(a):
        a["image"] = a["image"][:, :27]

    def missing_task(a):
        del a["boundary"]

    def empty(a):
        for key in list(a):
            a[key] = a[key][:0]

    def too_few_targets(a):
        a["right"] = a["right"][:-1]

    return [
        (labels_out_of_range, r"train split: task 'left'.*10"),
        (float_images, r"train split of 'multi_mnist': images are float32"),
        (cropped_images, r"images have shape \(27, 28, 1\), the dataset declares \(28, 28, 1\)"),
        (
            missing_task,
            r"no targets for task\(s\) \['boundary'\]; model tasks \['boundary', 'left', "
            r"'right'\], data features \['image', 'left', 'right'\]",
        ),
        (empty, r"train split of 'multi_mnist' is empty"),
        (too_few_targets, r"task 'right' has 2047 targets for 2048 images"),
    ]


@pytest.mark.parametrize(
    ("mutate", "message"), _mutations(), ids=lambda x: getattr(x, "__name__", "")
)
@pytest.mark.parametrize("where", ["new", "resume"])
def test_bad_data_stops_before_compiling(tmp_path, unfinished, monkeypatch, mutate, message, where):
    load_split = data.load_split

    def mutated(builder, split, **kwargs):
        arrays = dict(load_split(builder, split, **kwargs))
        if split == "train":
            mutate(arrays)
        return arrays

    monkeypatch.setattr(data, "load_split", mutated)
    monkeypatch.setattr(jax, "jit", _no_compile)
    workdir = tmp_path / "new" if where == "new" else unfinished
    before = snapshot(unfinished)
    code, err = run_main(workdir, *TRAINED_ARGS)
    assert code == EXIT_INVALID
    assert re.search(message, err), err
    assert not (tmp_path / "new").exists()  # a new workdir is not even created
    assert snapshot(unfinished) == before  # an existing run is untouched


def _no_compile(*args, **kwargs):
    raise AssertionError("compiled before validating the data")


def test_ignore_label_is_not_out_of_range(tiny_multi_mnist, data_dir):
    exp = experiment.build_experiment(load_config(CONFIGS / "test.py"))
    arrays = dict(tiny_multi_mnist["train"])
    arrays["left"] = arrays["left"].copy()
    arrays["left"][:5] = exp.tasks["left"].ignore_label
    builder = data.prepare(data.DATASETS["multi_mnist"], config="tiny", data_dir=data_dir)
    assert experiment.check_data(builder, {"train": arrays}, exp) == (28, 28, 1)


def test_unprepared_dataset_names_the_directory(tmp_path):
    empty = tmp_path / "no_data_here"
    empty.mkdir()
    code, err = run_main(
        tmp_path / "run", "--config.dataset.config=mnist", f"--config.dataset.data_dir={empty}"
    )
    assert code == EXIT_INVALID
    assert str(empty) in err and "tfds build mnist" in err, err
    assert not (tmp_path / "run").exists()


# --- non-finite values: exit 3 after logging, the last good checkpoint kept ---

EXPLODING = ("--config.optimizer.name=sgd", "--config.optimizer.learning_rate=1e30")


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, tiny_multi_mnist):
    workdir = tmp_path / "run"
    code, err = run_main(workdir, *EXPLODING, "--config.checkpoint_every_steps=1")
    assert code == EXIT_NON_FINITE, err
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    bad = records[-1]
    assert bad["non_finite"] and all(isinstance(t, str) for t in bad["non_finite"])
    assert f"for task(s) {bad['non_finite']} at step {bad['step']}" in err
    assert (workdir / "loss_curves.png").is_file()  # drawn for a failed run too
    with Checkpointer(workdir / "checkpoints", max_to_keep=3) as checkpointer:
        last = checkpointer.latest_step()
        assert last == bad["step"] - 1 and f"checkpoints/{last}" in err
        # The kept checkpoint restores (its digest verified) with every value finite.
        state, _ = checkpointer.restore(last, _abstract_state(*EXPLODING))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    # Rerunning stops again at the same step, still without touching the checkpoint.
    before = snapshot(workdir / "checkpoints")
    again, err = run_main(workdir, *EXPLODING, "--config.checkpoint_every_steps=1")
    assert again == EXIT_NON_FINITE and f"at step {bad['step']}" in err
    assert snapshot(workdir / "checkpoints") == before


def test_non_finite_steps_can_be_skipped_up_to_a_limit(tmp_path, tiny_multi_mnist):
    workdir = tmp_path / "run"
    code, err = run_main(workdir, *EXPLODING, "--config.max_non_finite_skips=2")
    assert code == EXIT_NON_FINITE, err
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    bad = [r["step"] for r in records if r.get("non_finite")]
    assert len(bad) == 3 and bad == list(range(bad[0], bad[0] + 3))
    assert err.count("step skipped") == 2 and f"at step {bad[-1]}" in err


def test_guarded_step_leaves_the_state_untouched_when_not_finite():
    tasks, model, _, batch = multi_mnist_setup(batch_size=8)
    tx, method = optax.adam(1e-3), weighting.create("uncertainty")
    state = jax.device_get(create_train_state(model, tx, method, batch["image"], seed=0))
    # A finite state whose forward overflows: the representation becomes infinite.
    params = jax.tree.map(lambda x: x, state.params)
    params["shared"]["Dense_0"]["kernel"] = params["shared"]["Dense_0"]["kernel"] * 1e38
    state = state._replace(params=params)
    mesh = parallel.make_mesh(1)
    shardings = parallel.state_shardings(jax.eval_shape(lambda s: s, state), mesh)
    step = parallel.make_parallel_train_step(
        model, tasks, tx, method, mesh=mesh, state_sharding=shardings
    )
    new, metrics = step(jax.device_put(state, shardings), parallel.shard_batch(batch, mesh))
    assert not np.all(metrics[parallel.FINITE_TASKS]) and int(new.step) == 1
    kept = new._replace(step=state.step)
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


# --- checkpoints that cannot be restored: exit 4 naming the path, nothing changed ---


def _largest_array_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state" / "d").iterdir() if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir: Path) -> None:
    path = _largest_array_file(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_bytes(step_dir: Path) -> None:
    path = _largest_array_file(step_dir)
    content = bytearray(path.read_bytes())
    content[len(content) // 2 :: 97] = bytes(b ^ 0xFF for b in content[len(content) // 2 :: 97])
    path.write_bytes(bytes(content))


def _wrong_digest(step_dir: Path) -> None:
    path = step_dir / "meta" / "metadata"
    meta = json.loads(path.read_text())
    meta["digest"] = "0" * 64
    path.write_text(json.dumps(meta))


def _truncated_metadata(step_dir: Path) -> None:
    path = step_dir / "meta" / "metadata"
    path.write_bytes(path.read_bytes()[:20])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, "is corrupt or truncated"),
        (_flip_bytes, "is corrupt"),
        (_wrong_digest, "do not match the digest"),
        (_truncated_metadata, "metadata cannot be read"),
    ],
)
# orbax leaves an asyncio callback behind when a read fails; it is harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_checkpoint_stops_naming_its_path(unfinished, damage, message):
    step_dir = unfinished / "checkpoints" / "10"
    damage(step_dir)
    before = snapshot(unfinished)
    code, err = run_main(unfinished, *TRAINED_ARGS)
    assert code == EXIT_CHECKPOINT
    assert f"checkpoint '{step_dir}'" in err and message in err, err
    assert snapshot(unfinished) == before  # no restart from scratch, the older one intact


def test_damaged_checkpoint_stops_with_its_one_message(unfinished, data_dir):
    # In a process of its own: orbax, when one read of a restore fails, abandons the
    # others, and tensorstore prints "Event loop is closed" tracebacks to stderr for
    # those; the manifest check names the damaged file before orbax reads anything.
    _truncate(unfinished / "checkpoints" / "10")
    done = run_cli(unfinished, *TRAINED_ARGS, data_dir=data_dir)
    assert done.returncode == EXIT_CHECKPOINT, done.stderr[-3000:]
    assert re.search(r"is corrupt or truncated \(file 'd/\w+' has \d+ bytes", done.stderr)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


# Without a manifest orbax reads the damaged file: the asyncio leftover described above.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_checkpoint_without_its_manifest_is_still_checked(unfinished):
    # A checkpoint written before manifests existed: the digest still catches damage.
    step_dir = unfinished / "checkpoints" / "10"
    (step_dir / "manifest.json").unlink()
    _flip_bytes(step_dir)
    code, err = run_main(unfinished, *TRAINED_ARGS)
    assert code == EXIT_CHECKPOINT
    assert f"checkpoint '{step_dir}'" in err and "is corrupt" in err, err


def test_checkpoint_of_other_shapes_names_the_leaf_and_both_shapes(unfinished):
    # The same config now builds another model (as after a code change): heads of 32.
    config = json.loads((unfinished / "config.json").read_text())
    config["model"]["head_hidden"] = [32]
    (unfinished / "config.json").write_text(json.dumps(config))
    code, err = run_main(unfinished, *TRAINED_ARGS, "--config.model.head_hidden=(32,)")
    assert code == EXIT_CHECKPOINT
    assert str(unfinished / "checkpoints" / "10") in err
    assert re.search(
        r"leaf 'params/tasks/left/\w+/\w+': checkpoint has shape \([^)]*50[^)]*\) float32, "
        r"model has shape \([^)]*32[^)]*\) float32",
        err,
    ), err


def _abstract_state(*overrides: str):
    """The test config's `TrainState` shapes, with command-line style overrides."""
    config = load_config(CONFIGS / "test.py", [o.removeprefix("--config.") for o in overrides])
    exp = experiment.build_experiment(config)
    image = jax.ShapeDtypeStruct((config.batch_size, 28, 28, 1), np.float32)
    return jax.eval_shape(
        lambda x: create_train_state(exp.model, exp.tx, exp.weighting, x, seed=config.seed), image
    )
