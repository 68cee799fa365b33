"""Checkpoints of the whole `TrainState` plus host-side state, with checked restores.

`Checkpointer` wraps an orbax `CheckpointManager`. Each checkpoint is a directory
`<root>/<step>` holding two items:

* `state`: the `TrainState` (step, params, batch statistics, optimizer state, weighting
  state, base PRNG key), arrays stored exactly;
* `meta`: JSON with the host state the caller passes (the data iterator's state, counters)
  plus, written by this module, every state leaf's path, shape and dtype and a SHA-256
  digest of the leaves' bytes.

Orbax writes a checkpoint into a temporary directory and renames it when complete, so a
process killed during a write leaves no step directory, only a temporary one that is
ignored (and removed) on the next start: the latest *complete* checkpoint is used.
Restoring compares the stored leaf shapes with the model's first (naming the leaf and
both shapes) and the digest after reading, so a truncated or altered checkpoint stops
with `CheckpointError` naming its directory rather than training from wrong values.

Beside the two items, `<step>/manifest.json` (written once the checkpoint is complete)
records the size and SHA-256 of every file of the `state` item; a restore checks the
files against it before orbax reads them. A damaged array file is then named without
reading it: orbax, when one of its reads fails, abandons the others, and tensorstore
prints an "Event loop is closed" traceback for each that completes after orbax closed
its event loop. A checkpoint without a manifest (older, or the process stopped between
the rename and the manifest) is restored without this check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


class CheckpointError(RuntimeError):
    """A checkpoint cannot be restored: corrupt, truncated, or for a different model."""


def _brief(error: BaseException) -> str:
    """`Type: first line` of an error, at most 300 characters (tensorstore errors carry
    their whole JSON spec)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


def leaf_path(path: tuple) -> str:
    """A pytree key path as `a/b/0/c`."""
    parts = []
    for key in path:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def describe_leaves(tree: PyTree) -> dict[str, list]:
    """`{leaf path: [shape, dtype]}` of a pytree of arrays or `jax.ShapeDtypeStruct`s."""
    return {
        leaf_path(path): [list(leaf.shape), str(np.dtype(leaf.dtype))]
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def digest(tree: PyTree) -> str | None:
    """SHA-256 over every leaf's path, shape, dtype and bytes; None when some leaf is
    not fully addressable from this process (multi-host sharded arrays)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not all(getattr(leaf, "is_fully_addressable", True) for _, leaf in leaves):
        return None
    sha = hashlib.sha256()
    for path, leaf in leaves:
        value = np.ascontiguousarray(jax.device_get(leaf))
        sha.update(f"{leaf_path(path)}:{value.shape}:{value.dtype}".encode())
        sha.update(value.tobytes())
    return sha.hexdigest()


def compare_leaves(saved: Mapping[str, list], expected: Mapping[str, list]) -> list[str]:
    """Human-readable differences between two `describe_leaves` results (empty if none),
    in `expected`'s leaf order (for a `TrainState`: step, params, batch_stats, ...)."""
    problems = []
    for path, (e_shape, e_dtype) in expected.items():
        if path not in saved:
            problems.append(f"leaf {path!r} of the model is missing from the checkpoint")
        elif saved[path] != [e_shape, e_dtype]:
            s_shape, s_dtype = saved[path]
            problems.append(
                f"leaf {path!r}: checkpoint has shape {tuple(s_shape)} {s_dtype}, "
                f"model has shape {tuple(e_shape)} {e_dtype}"
            )
    problems.extend(
        f"leaf {path!r} is in the checkpoint but not in the model"
        for path in saved
        if path not in expected
    )
    return problems


MANIFEST = "manifest.json"


def file_manifest(directory: Path) -> dict[str, list]:
    """`{relative path: [size, SHA-256]}` of every file under `directory`."""
    manifest = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        sha = hashlib.sha256()
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                sha.update(block)
        manifest[str(path.relative_to(directory))] = [path.stat().st_size, sha.hexdigest()]
    return manifest


def manifest_problems(saved: Mapping[str, list], found: Mapping[str, list]) -> list[str]:
    """What differs between a saved `file_manifest` and the files found now."""
    problems = []
    for name, (size, sha) in saved.items():
        if name not in found:
            problems.append(f"file {name!r} is missing")
        elif found[name][0] != size:
            problems.append(f"file {name!r} has {found[name][0]} bytes, {size} when saved")
        elif found[name][1] != sha:
            problems.append(f"file {name!r} has other bytes than when saved")
    return problems


class Checkpointer:
    """Saves and restores `(state, meta)` checkpoints under one directory.

    Args:
      directory: the checkpoint root (created if missing).
      max_to_keep: how many of the latest checkpoints to keep; older ones are deleted
        only after a newer one is complete.
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            # Synchronous: `save` returns once the checkpoint is renamed into place, so
            # a checkpoint is never in flight when the loop decides to stop.
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def step_directory(self, step: int) -> Path:
        """The directory of the checkpoint of `step`."""
        return self.directory / str(step)

    def latest_step(self) -> int | None:
        """The step of the latest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of all complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: PyTree, meta: Mapping[str, Any]) -> None:
        """Writes the checkpoint of `step` (returns once it is complete on disk).

        `meta` must be JSON-serialisable; the keys `leaves` and `digest` are reserved.
        """
        record = {**meta, "leaves": describe_leaves(state), "digest": digest(state)}
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record)
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            where = self.step_directory(step)
            manifest = json.dumps(file_manifest(where / "state"), indent=1).encode()
            temporary = where / f".{MANIFEST}.tmp"
            temporary.write_bytes(manifest)
            temporary.replace(where / MANIFEST)

    def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """Restores the checkpoint of `step` into the structure and shardings of
        `abstract_state` (a pytree of `jax.ShapeDtypeStruct` with `sharding`).

        Returns:
          `(state, meta)`, meta without the reserved keys.

        Raises:
          CheckpointError: naming the checkpoint directory, when it cannot be read, when
            its leaves differ from `abstract_state`'s (each leaf named, with both shapes),
            or when the restored bytes do not match the digest written with them.
        """
        where = self.step_directory(step)
        if (where / MANIFEST).is_file():
            try:
                saved = json.loads((where / MANIFEST).read_text())
            except ValueError as error:
                raise CheckpointError(
                    f"checkpoint {str(where)!r} is corrupt or truncated (its {MANIFEST} cannot "
                    f"be read: {_brief(error)}); move it away to resume from an earlier checkpoint"
                ) from error
            problems = manifest_problems(saved, file_manifest(where / "state"))
            if problems:
                raise CheckpointError(
                    f"checkpoint {str(where)!r} is corrupt or truncated ({'; '.join(problems[:5])}"
                    "); move it away to resume from an earlier checkpoint"
                )
        try:
            meta = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            ).meta
        except Exception as error:
            raise CheckpointError(
                f"checkpoint {str(where)!r} is corrupt or truncated (its metadata cannot be "
                f"read: {_brief(error)}); move it away to resume from an earlier checkpoint"
            ) from error
        if not isinstance(meta, dict) or "leaves" not in meta:
            raise CheckpointError(
                f"checkpoint {str(where)!r} is corrupt or truncated (no leaf record in its "
                "metadata)"
            )
        problems = compare_leaves(meta["leaves"], describe_leaves(abstract_state))
        if problems:
            shown = "; ".join(problems[:10])
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise CheckpointError(
                f"checkpoint {str(where)!r} does not fit the model: {shown}{more}"
            )
        try:
            state = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            ).state
        except Exception as error:
            raise CheckpointError(
                f"checkpoint {str(where)!r} is corrupt or truncated (its arrays cannot be "
                f"read: {_brief(error)}); move it away to resume from an earlier checkpoint"
            ) from error
        expected = meta.get("digest")
        if expected is not None and digest(state) != expected:
            raise CheckpointError(
                f"checkpoint {str(where)!r} is corrupt: the restored arrays do not match "
                "the digest written with them; move it away to resume from an earlier checkpoint"
            )
        return state, {k: v for k, v in meta.items() if k not in ("leaves", "digest")}

    def close(self) -> None:
        """Waits for pending work and releases the manager."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
