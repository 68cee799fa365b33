"""`experiments.sweep`: finished runs are reused only when their config is the requested
one; a stale workdir stops the sweep before anything runs; results carry provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mtl_jax import provenance
from tests.cli import CONFIGS, ROOT, compile_cache


def _sweep(root, *args, data_dir, cache, methods="equal,krum:n_selected=2"):
    env = dict(
        os.environ,
        MTL_JAX_DATA_DIR=data_dir,
        JAX_COMPILATION_CACHE_DIR=cache,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    argv = [
        sys.executable, "-m", "experiments.sweep", "--config", str(CONFIGS / "test.py"),
        "--workdir", str(root), "--methods", methods, "--seeds", "0",
        *args,
    ]  # fmt: skip
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_stale_runs_stop_the_sweep_and_finished_ones_are_reused(
    tmp_path, tiny_multi_mnist, data_dir, tmp_path_factory
):
    cache = compile_cache(tmp_path_factory)
    root = tmp_path / "sweep"
    first = _sweep(root, "--config.num_steps=3", data_dir=data_dir, cache=cache)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[sweep] 2 runs: 0 finished already, 2 to run" in first.stdout
    assert "[sweep] 2/2 done" in first.stdout
    krum = root / "krum-n_selected=2" / "seed0"
    results = json.loads((krum / "results.json").read_text())
    assert results["config"]["weighting"]["kwargs"] == {"n_selected": 2}
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

    changed = _sweep(root, "--config.num_steps=4", data_dir=data_dir, cache=cache)
    assert changed.returncode == 2
    assert "num_steps: saved 3, now 4" in changed.stderr
    assert str(krum) in changed.stderr and "nothing was run" in changed.stderr
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert after == before, "a refused sweep touched the workdir"

    again = _sweep(root, "--config.num_steps=3", data_dir=data_dir, cache=cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[sweep] 2 runs: 2 finished already, 0 to run" in again.stdout
    assert "krum:n_selected=2" in (root / "summary.md").read_text()

    # Provenance: in every run's results.json and in the sweep's own record.
    record = results["provenance"]
    assert set(record["versions"]) == {"python", *provenance.PACKAGES}
    assert record["versions"]["jax"] and record["versions"]["flax"]
    assert record["git"] is None or set(record["git"]) == {"commit", "dirty", "root"}
    assert record["devices"]["count"] >= 1 and record["devices"]["kind"]
    assert "experiments" in " ".join(record["command"])
    assert record["dataset"] == results["dataset"]
    assert set(record["dataset"]) == {"name", "config", "version"}
    assert "xla_flags" in record
    sweep_record = json.loads((root / "provenance.json").read_text())
    assert len(sweep_record["runs"]) == 2 and sweep_record["sweep"]["versions"]["jax"]
    assert "Summarised with: mtl_jax" in (root / "summary.md").read_text()


def test_invalid_method_option_stops_before_running(tmp_path, data_dir, tmp_path_factory):
    cache = compile_cache(tmp_path_factory)
    root = tmp_path / "sweep"
    done = _sweep(
        root, "--config.num_steps=3", data_dir=data_dir, cache=cache, methods="mgda:apply_to=both"
    )
    assert done.returncode == 2
    assert "apply_to must be one of" in done.stderr
    assert not root.exists() or not any(root.rglob("config.json"))
