"""Running the experiment CLI in a subprocess, and reading back what a run left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"

# Child prelude: `hook` code runs before the CLI's main().
_CHILD = """
import os, signal, sys
{hook}
from experiments.main import main
sys.exit(main(sys.argv[1:]))
"""


def compile_cache(tmp_path_factory) -> str:
    """One persistent XLA compilation cache for the whole session's subprocesses."""
    path = tmp_path_factory.getbasetemp() / "jax_compilation_cache"
    path.mkdir(exist_ok=True)
    return str(path)


def cli_command(
    workdir,
    *args: str,
    config: str = "test.py",
    data_dir: str | None = None,
    cache_dir: str | None = None,
    devices: int | None = None,
    hook: str = "",
    env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of `python -m experiments.main --config CONFIG --workdir WORKDIR
    --no-progress ARGS`.

    Args:
      hook: Python code run in the child before the CLI starts (to inject faults).
      devices: simulate this many CPU devices (XLA_FLAGS, set before JAX starts).
      cache_dir: persistent compilation cache shared by the children (speed only).
      env: extra environment variables.
    """
    environ = dict(os.environ, **(env or {}))
    if data_dir:
        environ["MTL_JAX_DATA_DIR"] = data_dir
    if cache_dir:
        environ["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    if devices:
        environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    argv = [
        sys.executable, "-c", _CHILD.format(hook=hook),
        "--config", str(CONFIGS / config), "--workdir", str(workdir), "--no-progress", *args,
    ]  # fmt: skip
    return argv, environ


def run_cli(workdir, *args: str, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    """Runs the CLI to completion (see `cli_command` for the options)."""
    argv, environ = cli_command(workdir, *args, **options)
    return subprocess.run(
        argv, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout
    )


def start_cli(workdir, *args: str, **options) -> subprocess.Popen:
    """Starts the CLI without waiting (see `cli_command` for the options)."""
    argv, environ = cli_command(workdir, *args, **options)
    return subprocess.Popen(
        argv, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def metrics_records(workdir: Path) -> list[dict]:
    """metrics.jsonl without fields that depend on wall-clock time."""
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "time" not in k} for line in lines]


def checkpoint_arrays(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """`{leaf path: array}` of the `TrainState` in the checkpoint of `step`."""
    tree = ocp.StandardCheckpointer().restore(Path(workdir) / "checkpoints" / str(step) / "state")
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def assert_bitwise_equal_runs(a: Path, b: Path, final_step: int) -> None:
    """Two finished runs are equal bit for bit: every logged step and evaluation, the
    final results, params.msgpack and every array of the final checkpoint."""
    assert metrics_records(a) == metrics_records(b)
    ra, rb = (json.loads((Path(w) / "results.json").read_text()) for w in (a, b))
    assert ra["final"] == rb["final"] and ra["evals"] == rb["evals"]
    assert (Path(a) / "params.msgpack").read_bytes() == (Path(b) / "params.msgpack").read_bytes()
    xa, xb = checkpoint_arrays(a, final_step), checkpoint_arrays(b, final_step)
    assert set(xa) == set(xb)
    for key in xa:
        assert xa[key].dtype == xb[key].dtype and xa[key].tobytes() == xb[key].tobytes(), key
