"""Where a result came from: software versions, the code's commit, the command, the devices.

`collect()` returns a JSON-ready record that `results.json` and every sweep summary carry,
so a table can be traced back to the code, the machine and the data that produced it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# Distribution names whose versions every record lists (None when not installed).
PACKAGES = (
    "mtl_jax",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "numpy",
    "orbax-checkpoint",
    "grain",
    "tensorflow-datasets",
    "ml-collections",
)


def package_versions() -> dict[str, str | None]:
    """`{"python": ..., package: version or None}` for `PACKAGES`."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(path: Path | None = None) -> dict[str, Any] | None:
    """`{"commit", "dirty"}` of the checkout holding `path` (default: this package), or
    None when it is not inside a git work tree (an installed wheel) or git is missing.
    `dirty` is true when tracked files differ from the commit or untracked files exist."""
    root = Path(path) if path is not None else Path(__file__).resolve().parent
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain")
    if commit is None or status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip()), "root": top.strip()}


def device_record() -> dict[str, Any]:
    """The devices the run saw: platform, kind, counts."""
    import jax

    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": jax.device_count(),
        "local_count": jax.local_device_count(),
        "processes": jax.process_count(),
    }


def collect(*, dataset: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of this process, with `dataset` (name, config, version) when
    given. `command` is the command line as the interpreter received it."""
    return {
        "versions": package_versions(),
        "git": git_state(),
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "host": platform.node(),
        "devices": device_record(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "dataset": dataset,
        "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def code_label(git: dict[str, Any] | None) -> str:
    """`"<commit, 12 digits>"` with `" (dirty)"` when the tree was, or "no git checkout"."""
    if not git:
        return "no git checkout"
    return git["commit"][:12] + (" (dirty)" if git["dirty"] else "")


def describe(record: dict[str, Any]) -> str:
    """One Markdown line: commit (dirty or not), key versions, devices."""
    code = code_label(record.get("git"))
    if record.get("git"):
        code = f"commit {code}"
    v = record["versions"]
    d = record["devices"]
    return (
        f"mtl_jax {v.get('mtl_jax')}, {code}; python {v.get('python')}, jax {v.get('jax')}, "
        f"flax {v.get('flax')}, optax {v.get('optax')}; {d['count']} × {d['kind']} "
        f"({d['platform']}); XLA_FLAGS={record.get('xla_flags') or '(none)'}"
    )
