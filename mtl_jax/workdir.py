"""The experiment workdir: which run it holds, and its append-only metrics log.

A workdir holds one run: `config.json` (the config it was started with), `metrics.jsonl`,
`train.log`, `tensorboard/`, `checkpoints/`, the plots, and once finished `results.json`
and `params.msgpack`. Rerunning the same
config in it resumes (or, when finished, reports the saved results); a different config
is refused unless the caller asks to overwrite, and files that are not a run's outputs
are never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
PARAMS_FILE = "params.msgpack"
CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
PLOTS = (
    "loss_curves.png",
    "task_weights.png",
    "grad_cosine.png",
    "eval_curves.png",
    "conflict_by_layer.png",
    "confusion_*.png",  # one per classification task
)
# Written into a finished run's workdir by `mtl-jax explain` (`mtl_jax.explain.report`).
EXPLANATIONS = ("saliency.png", "saliency.json")
# What a run writes into its workdir (glob patterns), config first.
OUTPUTS = (
    CONFIG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    PARAMS_FILE,
    CHECKPOINT_DIR,
    LOG_FILE,
    TENSORBOARD_DIR,
    *PLOTS,
    *EXPLANATIONS,
)

# What `open_workdir` found.
NEW = "new"  # nothing there yet (or overwritten): start from step 0
RESUME = "resume"  # an unfinished run of the same config
FINISHED = "finished"  # a finished run of the same config: results.json is final


class WorkdirError(ValueError):
    """The workdir holds something this run must not touch."""


class ConfigMismatch(WorkdirError):
    """The workdir holds a run of a different config; `differences` lists the keys."""

    def __init__(self, message: str, differences: list[str]):
        super().__init__(message)
        self.differences = differences


def config_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists), as stored in config.json."""
    return json.loads(config.to_json(sort_keys=True))


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Config keys added after runs were saved without them, each with the value that behaves
# as those runs did: a saved config that lacks the key matches a config holding that value.
ADDED_KEYS: dict[str, Any] = {
    "model.init_from": "",
    "model.input_bn": "shared",
    "model.num_shared_experts": 1,
    "model.num_task_experts": 1,
    "model.ple_levels": 0,
    "model.dselect_k": 2,
    "model.dselect_gamma": 1.0,
    "model.ltb_levels": 0,
    "model.ltb_temperature": 1.0,
    "conflict_every_steps": 0,
    "dataset.augment": "",
    "dataset.sampler": "uniform",
    "dataset.sampler_task": "",
    "task_options": {},
    "optimizer.clip_global_norm": 0.0,
    "optimizer.plateau_factor": 0.1,
    "optimizer.plateau_patience": 10,
    "optimizer.plateau_cooldown": 0,
    "optimizer.plateau_accumulation_steps": 100,
    "optimizer.plateau_rtol": 1e-4,
}


# Config sections that change how fast a run goes, never a number it produces: a run
# resumes, and a sweep reuses it, whatever they hold.
NEUTRAL_SECTIONS = ("pipeline",)


def _neutral(key: str) -> bool:
    return key.split(".", 1)[0] in NEUTRAL_SECTIONS


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`"key: saved X, now Y"` for every dotted key whose value differs (a key of
    `ADDED_KEYS` absent from `saved` counts as holding its value there; the keys of
    `NEUTRAL_SECTIONS` are not compared)."""
    old, new = _flatten(saved), _flatten(current)
    old = {k: v for k, v in old.items() if not _neutral(k)}
    new = {k: v for k, v in new.items() if not _neutral(k)}
    old = {**{k: v for k, v in ADDED_KEYS.items() if k in new}, **old}

    def show(flat: dict[str, Any], key: str) -> str:
        return repr(flat[key]) if key in flat else "<absent>"

    return [
        f"{key}: saved {show(old, key)}, now {show(new, key)}"
        for key in sorted(set(old) | set(new))
        if key not in old or key not in new or old[key] != new[key]
    ]


def atomic_write(path: Path, content: bytes) -> None:
    """Writes `content` to `path` via a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def inspect_workdir(
    workdir: Path, config: ml_collections.ConfigDict, *, overwrite: bool = False
) -> str:
    """Decides what to do with `workdir` without changing it: `NEW`, `RESUME` or `FINISHED`.

    Raises:
      WorkdirError: it is not a directory, or it holds files but no config.json (not a
        run's workdir).
      ConfigMismatch: it holds a run of a different config and `overwrite` is false (the
        message and `differences` list the differing keys).
    """
    if not workdir.exists():
        return NEW
    if not workdir.is_dir():
        raise WorkdirError(f"workdir {str(workdir)!r} exists and is not a directory")
    contents = sorted(p.name for p in workdir.iterdir())
    if not contents:
        return NEW
    config_path = workdir / CONFIG_FILE
    if not config_path.is_file():
        raise WorkdirError(
            f"workdir {str(workdir)!r} is not empty ({contents[:5]}) and holds no {CONFIG_FILE}, "
            "so it is not an mtl_jax run; nothing was overwritten: choose another --workdir"
        )
    try:
        saved = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise WorkdirError(f"cannot read {str(config_path)!r}: {error}") from error
    differences = config_differences(saved, config_record(config))
    if differences and not overwrite:
        shown = "; ".join(differences[:10])
        raise ConfigMismatch(
            f"workdir {str(workdir)!r} holds a run of a different config ({shown}); nothing "
            "was overwritten: choose another --workdir, rerun with the same config to resume, "
            "or pass --overwrite to discard that run",
            differences,
        )
    if overwrite:
        return NEW
    return FINISHED if (workdir / RESULTS_FILE).is_file() else RESUME


def start_workdir(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Prepares `workdir` for a run from step 0: removes a previous run's outputs (only
    those, see `OUTPUTS`) and writes config.json."""
    workdir.mkdir(parents=True, exist_ok=True)
    # config.json goes last (replaced, not deleted): an interrupted overwrite still
    # leaves a workdir that `--overwrite` accepts.
    for pattern in OUTPUTS[1:]:
        for path in workdir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    atomic_write(
        workdir / CONFIG_FILE, json.dumps(config_record(config), indent=2, sort_keys=True).encode()
    )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, up to the first incomplete or unreadable line
    (a process killed while writing leaves at most one)."""
    if not path.is_file():
        return []
    records = []
    with open(path) as file:
        for line in file:
            if not line.endswith("\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def write_metrics(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replaces metrics.jsonl atomically with `records`, one JSON object per line."""
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in records).encode())
