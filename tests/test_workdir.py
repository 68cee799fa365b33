"""The workdir protocol: which run a directory holds, and the metrics log's recovery."""

from __future__ import annotations

import json

import pytest

from experiments.configs import base
from mtl_jax import workdir as wd


def test_statuses(tmp_path):
    config = base.get_config()
    run = tmp_path / "run"
    assert wd.inspect_workdir(run, config) == wd.NEW
    run.mkdir()
    assert wd.inspect_workdir(run, config) == wd.NEW  # empty
    wd.start_workdir(run, config)
    assert wd.inspect_workdir(run, config) == wd.RESUME
    (run / wd.RESULTS_FILE).write_text("{}")
    assert wd.inspect_workdir(run, config) == wd.FINISHED
    assert wd.inspect_workdir(run, config, overwrite=True) == wd.NEW


def test_a_different_config_is_refused_with_the_differences(tmp_path):
    config = base.get_config()
    wd.start_workdir(tmp_path, config)
    config.seed = 3
    config.model.head_hidden = (8,)
    with pytest.raises(wd.WorkdirError) as error:
        wd.inspect_workdir(tmp_path, config)
    message = str(error.value)
    assert "model.head_hidden: saved [50], now [8]; seed: saved 0, now 3" in message
    assert "--overwrite" in message


def test_overwrite_removes_only_outputs(tmp_path):
    config = base.get_config()
    wd.start_workdir(tmp_path, config)
    (tmp_path / wd.CHECKPOINT_DIR / "5").mkdir(parents=True)
    (tmp_path / wd.METRICS_FILE).write_text('{"step": 1}\n')
    (tmp_path / "notes.txt").write_text("mine")
    config.seed = 1
    wd.start_workdir(tmp_path, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == [wd.CONFIG_FILE, "notes.txt"]
    assert json.loads((tmp_path / wd.CONFIG_FILE).read_text())["seed"] == 1


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "data.csv").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(wd.WorkdirError, match="holds no config.json"):
            wd.inspect_workdir(tmp_path, base.get_config(), overwrite=overwrite)


def test_read_metrics_stops_at_a_torn_line(tmp_path):
    path = tmp_path / wd.METRICS_FILE
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert wd.read_metrics(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    assert wd.read_metrics(path) == [{"step": 1}]
    wd.write_metrics(path, [{"step": 1, "loss": {"a": 0.1}}])
    assert path.read_text() == '{"step": 1, "loss": {"a": 0.1}}\n'
    assert wd.read_metrics(tmp_path / "missing.jsonl") == []
