"""The experiment CLI end to end on the tiny offline build, and the `mtl-jax` command
(`mtl_jax.cli`, in process): config names, `--print-config`, suggestions for misspelt
names, and its train / sweep / summarize / eval subcommands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import sweep
from mtl_jax import cli
from mtl_jax import workdir as wd
from mtl_jax.config import ConfigError, close_keys, find_config, load_config
from tests.cli import CONFIGS, ROOT, checkpoint_arrays, compile_cache, metrics_records, run_cli


@pytest.mark.parametrize("method", ["equal", "mgda", "uncertainty"])
def test_test_config_trains_end_to_end(tmp_path, tiny_multi_mnist, data_dir, method):
    workdir = tmp_path / "run"
    result = run_cli(workdir, f"--config.weighting.name={method}", data_dir=data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 30
    assert results["config"]["weighting"]["name"] == method
    assert results["train_wall_s"] < 60
    for key in ("left/accuracy", "right/accuracy", "boundary/f1", "boundary/ods_f", "left/loss"):
        assert 0.0 <= results["final"][key] < float("inf"), key
    records = metrics_records(workdir)
    lines = [r for r in records if "loss" in r]  # training steps; the rest are evaluations
    assert records[-1] == {"step": 30, "eval": results["final"]}
    assert [line["step"] for line in lines] == list(range(1, 31))
    # Training reduces the total loss (mean of the first vs the last five steps).
    totals = [sum(line["loss"].values()) for line in lines]
    assert sum(totals[-5:]) < sum(totals[:5])
    assert set(lines[0]["loss"]) == set(lines[0]["weights"]) == {"boundary", "left", "right"}
    assert (workdir / "params.msgpack").stat().st_size > 0
    assert "left" in result.stdout and "accuracy=" in result.stdout
    # A checkpoint every 5 steps, the last 3 kept; one evaluation, at the end.
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [20, 25, 30]
    assert results["evals"] == [{"step": 30, "metrics": results["final"]}]
    assert results["devices"] == 1 and results["resumed_from"] is None
    for plot in ("loss_curves.png", "task_weights.png"):
        assert (workdir / plot).stat().st_size > 10_000, plot
    assert (workdir / "grad_cosine.png").exists() == (method == "mgda")


def test_epoch_counting_method_gets_the_epoch_length(tmp_path, tiny_multi_mnist, data_dir):
    """dwa counts epochs: the run fills steps_per_epoch from the data (2048 pairs / 64)."""
    workdir = tmp_path / "run"
    result = run_cli(
        workdir, "--config.weighting.name=dwa", "--config.num_steps=3", data_dir=data_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dwa: 32 steps per epoch" in result.stderr


def test_mgda_logs_solver_metrics(tmp_path, tiny_multi_mnist, data_dir):
    workdir = tmp_path / "run"
    result = run_cli(
        workdir,
        "--config.weighting.name=mgda",
        "--config.num_steps=3",
        "--config.weighting.rep_grad=true",
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [r for r in metrics_records(workdir) if "loss" in r][-1]
    assert line["weighting/solver_iterations"] >= 0 and line["weighting/solver_gap"] <= 1e-5
    assert len(line["grad_cosine"]) == 3 and abs(sum(line["weights"].values()) - 1) < 1e-5


def test_layerwise_gradvac_logs_block_weights(tmp_path, tiny_multi_mnist, data_dir):
    workdir = tmp_path / "run"
    result = run_cli(
        workdir,
        "--config.weighting.name=gradvac",
        "--config.weighting.kwargs.blocks=layer",
        "--config.num_steps=3",
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [r for r in metrics_records(workdir) if "loss" in r][-1]
    # One row of task weights per LeNet layer (Conv_0, Conv_1, Dense_0), three tasks each.
    assert np.shape(line["block_weights"]) == (3, 3)
    np.testing.assert_allclose(
        [line["weights"][n] for n in sorted(line["weights"])],
        np.mean(line["block_weights"], axis=0),
        rtol=1e-5,
    )


def test_unknown_method_stops_before_compiling(tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(workdir, "--config.weighting.name=nash")
    assert result.returncode == 2
    assert "unknown weighting method 'nash'" in result.stderr
    assert "did you mean 'nash_mtl'" in result.stderr and "'mgda'" in result.stderr
    assert not workdir.exists()


def test_unknown_config_key(tmp_path):
    result = run_cli(tmp_path / "run", "--config.optimizer.lr=0.1")
    assert result.returncode == 2
    assert "unknown config key 'optimizer.lr'" in result.stderr and "learning_rate" in result.stderr


def test_existing_workdir_is_never_overwritten(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "results.json").write_text("precious")
    result = run_cli(workdir)
    assert result.returncode == 2
    assert str(workdir) in result.stderr and "not empty" in result.stderr
    assert (workdir / "results.json").read_text() == "precious"


def test_seed_example_runs(tmp_path, tiny_shapes, data_dir):
    workdir = tmp_path / "run"
    result = run_cli(
        workdir, "--config.dataset.config=tiny", "--config.num_steps=20", config="seed_example.py",
        data_dir=data_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((workdir / "results.json").read_text())["final"]
    assert set(final) >= {"shape/accuracy", "boundary/f1", "boundary/ods_f"}


def test_bfloat16_keeps_parameters_and_optimizer_state_float32(
    tmp_path, tiny_multi_mnist, data_dir
):
    workdir = tmp_path / "run"
    result = run_cli(
        workdir, "--config.dtype=bfloat16", "--config.num_steps=5", "--config.weighting.name=mgda",
        data_dir=data_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    arrays = checkpoint_arrays(workdir, 5)
    floats = {k: v.dtype for k, v in arrays.items() if np.issubdtype(v.dtype, np.floating)}
    assert floats and set(floats.values()) == {np.dtype(np.float32)}, floats
    losses = [list(r["loss"].values()) for r in metrics_records(workdir) if "loss" in r]
    assert len(losses) == 5 and np.isfinite(losses).all()
    final = json.loads((workdir / "results.json").read_text())["final"]
    assert 0.0 <= final["left/accuracy"] <= 1.0


@pytest.mark.slow
def test_bfloat16_multi_mnist_reaches_the_float32_accuracy_band(tmp_path, data_dir):
    """The full MultiMNIST config in bf16 and float32 (about 5 min each on 2 CPU cores).

    Measured: float32 left/right accuracy 0.898/0.864, boundary ODS-F 0.550; bfloat16
    0.897/0.861, 0.546.
    """
    final = {}
    for dtype in ("float32", "bfloat16"):
        workdir = tmp_path / dtype
        result = run_cli(
            workdir, f"--config.dtype={dtype}", config="multi_mnist.py", data_dir=data_dir,
            timeout=3600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        final[dtype] = json.loads((workdir / "results.json").read_text())["final"]
    for key in ("left/accuracy", "right/accuracy", "boundary/ods_f"):
        assert final["float32"][key] > {"boundary/ods_f": 0.5}.get(key, 0.85), final
        assert abs(final["bfloat16"][key] - final["float32"][key]) <= 0.02, (key, final)


def test_selection_split_is_evaluated_with_every_evaluation(tmp_path, tiny_multi_mnist, data_dir):
    workdir = tmp_path / "run"
    result = run_cli(
        workdir,
        "--config.num_steps=4",
        "--config.eval_every_steps=2",
        "--config.select_split=train",
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evals = json.loads((workdir / "results.json").read_text())["evals"]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(set(e["select"]) == set(e["metrics"]) for e in evals)
    assert evals[0]["select"] != evals[0]["metrics"]  # train and test splits differ
    refused = run_cli(tmp_path / "other", "--config.select_split=test", data_dir=data_dir)
    assert refused.returncode == 2 and "select_split" in refused.stderr


# --- `mtl-jax` (mtl_jax.cli) -----------------------------------------------------------


def test_bare_config_name_is_found_by_import_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = find_config("test")
    assert source.module == "experiments.configs.test" and source.name == "test"
    assert load_config("test").to_dict() == load_config(CONFIGS / "test.py").to_dict()
    assert find_config("experiments.configs.multi_mnist").name == "multi_mnist"
    # A path still works (relative to the working directory, as before).
    monkeypatch.chdir(ROOT)
    assert load_config("experiments/configs/test.py").num_steps == 30


def test_misspelt_config_name_suggests_the_closest():
    suggestion = r"unknown config 'mult_mnist'.*did you mean 'multi_mnist'"
    with pytest.raises(ConfigError, match=suggestion):
        load_config("mult_mnist")
    with pytest.raises(ConfigError, match=r"config file 'nowhere/x.py' does not exist"):
        load_config("nowhere/x.py")
    with pytest.raises(ConfigError, match=r"config module 'no_such_package.cfg' cannot be found"):
        load_config("no_such_package.cfg")


def test_config_argument_after_a_colon_goes_to_get_config(tmp_path, monkeypatch):
    package = tmp_path / "cli_test_configs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sized.py").write_text(
        "from experiments.configs import test\n\n\ndef get_config(steps='30'):\n"
        "    config = test.get_config()\n    config.num_steps = int(steps)\n    return config\n"
    )
    (package / "needs_arg.py").write_text(
        "from experiments.configs import test\n\n\ndef get_config(steps):\n"
        "    return test.get_config()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_config("cli_test_configs.sized:7").num_steps == 7
    assert load_config("cli_test_configs.sized").num_steps == 30
    assert load_config(f"{package / 'sized.py'}:9").num_steps == 9
    assert find_config("cli_test_configs.sized:7").name == "sized:7"
    with pytest.raises(ConfigError, match=r"get_config takes an argument \(steps\).*needs_arg:VAL"):
        load_config("cli_test_configs.needs_arg")
    with pytest.raises(ConfigError, match=r"config 'test': get_config takes no argument, got 'x'"):
        load_config("test:x")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("weighting.nmae", "weighting.name"),
        ("weightng.name", "weighting.name"),
        ("optimizer.lr", "optimizer.learning_rate"),
        ("learning_rate", "optimizer.learning_rate"),
        ("bs", "batch_size"),
        ("model.trnk", "model.trunk"),
    ],
)
def test_close_keys(typed, expected):
    assert close_keys(load_config("test"), typed)[0] == expected


def test_print_config_prints_the_overridden_config_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    overrides = ["--config.weighting.name=mgda", "--config.num_steps=7"]
    code = cli.main(["train", "--config", "test", "--print-config", *overrides])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert printed["weighting"]["name"] == "mgda" and printed["num_steps"] == 7
    expected = load_config("test", [o.removeprefix("--config.") for o in overrides])
    assert printed == wd.config_record(expected)  # what config.json would hold
    code = cli.main(["train", "--config", "test", "--workdir", "run", "--print-config"])
    assert code == 0 and not any(tmp_path.iterdir())


def test_misspelt_override_suggests_the_key_and_exits_2(tmp_path, capsys):
    code = cli.main(["train", "--config", "test", "--print-config", "--config.weighting.nmae=x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown config key 'weighting.nmae'" in err and "did you mean 'weighting.name'?" in err
    workdir = tmp_path / "run"
    argv = ["train", "--config", "test", "--workdir", str(workdir), "--config.optimizer.lr=1"]
    code = cli.main(argv)
    assert code == 2 and "did you mean 'optimizer.learning_rate'?" in capsys.readouterr().err
    assert not workdir.exists()


def test_usage_errors_exit_2(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["train", "--config", "test"]) == 2  # no --workdir, no --print-config
    assert "--workdir" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)


def test_missing_extra_is_named(monkeypatch, capsys):
    def missing(argv, prog):
        raise ModuleNotFoundError("No module named 'grain'", name="grain")

    monkeypatch.setitem(cli.COMMANDS, "train", ("", missing))
    assert cli.main(["train"]) == 2
    assert "pip install 'mtl-jax[experiments]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_multi_mnist):
    """`mtl-jax train --config test` in process: (exit status, workdir)."""
    workdir = tmp_path_factory.mktemp("mtl_jax_cli") / "run"
    code = cli.main(["train", "--config", "test", "--workdir", str(workdir), "--no-progress"])
    return code, workdir


def test_train_in_process(cli_run):
    code, workdir = cli_run
    assert code == 0
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 30 and results["train_wall_s"] < 60
    saved = json.loads((workdir / wd.CONFIG_FILE).read_text())
    assert saved == wd.config_record(load_config("test"))


def test_eval_reports_the_final_metrics(cli_run, capsys):
    code, workdir = cli_run
    assert code == 0
    assert cli.main(["eval", "--workdir", str(workdir), "--split", "test", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    final = json.loads((workdir / "results.json").read_text())["final"]
    assert set(metrics) == set(final)
    for key, value in final.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert cli.main(["eval", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "left" in out and "accuracy=" in out
    assert cli.main(["eval", "--workdir", str(workdir.parent / "missing")]) == 2


def test_sweep_then_summarize(tmp_path, tiny_multi_mnist, data_dir, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", compile_cache(tmp_path_factory))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    root = tmp_path / "sweep"
    argv = ["--config", "test", "--workdir", str(root), "--methods", "equal", "--seeds", "0"]
    assert cli.main(["sweep", *argv, "--config.num_steps=2"]) == 0
    recorded = json.loads((root / sweep.SWEEP_FILE).read_text())["argv"]
    assert recorded[:2] == ["--config", "test"] and recorded[-1] == "--config.num_steps=2"
    results = root / "equal" / "seed0" / wd.RESULTS_FILE
    written = results.stat().st_mtime_ns
    (root / "summary.md").unlink()

    assert cli.main(["summarize", "--workdir", str(root), "--last-evals", "1"]) == 0
    assert "test: 1 methods × 1 seeds" in (root / "summary.md").read_text()
    assert results.stat().st_mtime_ns == written  # nothing ran again
    assert cli.main(["summarize", "--workdir", str(tmp_path)]) == 2  # not a sweep


def test_summarize_recovers_an_older_sweeps_arguments(tmp_path):
    """A sweep from before sweep.json: its command line, from provenance.json."""
    command = [
        "/usr/bin/python", "/somewhere/experiments/sweep.py", "--config",
        "experiments/configs/test.py", "--workdir", "/old/place", "--methods", "equal,mgda",
        "--seeds", "0,1", "--no-run", "--config.num_steps=2",
    ]  # fmt: skip
    record = {"sweep": {"command": command, "cwd": str(ROOT)}, "runs": []}
    (tmp_path / "provenance.json").write_text(json.dumps(record))
    assert sweep.recorded_arguments(tmp_path) == [
        "--config", str(CONFIGS / "test.py"), "--methods", "equal,mgda", "--seeds", "0,1",
        "--config.num_steps=2",
    ]  # fmt: skip


def test_sweep_command_dispatches_to_experiments_sweep(monkeypatch):
    calls = []
    monkeypatch.setattr(sweep, "main", lambda argv, prog: calls.append((argv, prog)) or 7)
    assert cli.main(["sweep", "--config", "test", "--x"]) == 7
    assert calls == [(["--config", "test", "--x"], "mtl-jax sweep")]
