"""The experiment layer: one run from a config, end to end, resumable.

* `builders`: config → objects (dataset spec, tasks, model, method, optimizer);
* `run_data`: the splits, loaded and checked against the model;
* `loop`: `train_and_evaluate` — the training loop (step, log, eval, checkpoint);
* `records`: the shapes of metrics.jsonl lines and results.json evaluations;
* `writers`: where records and notes go (metrics.jsonl, TensorBoard, train.log, the
  console);
* `preemption`: SIGTERM handling; `warm_start` and `loading`: runs read back.

Workdir bookkeeping is `mtl_jax.workdir`; checkpoints are `mtl_jax.checkpointing`.
"""

from mtl_jax.experiment.builders import (
    Experiment,
    build_experiment,
    default_data_dir,
    learning_rate_schedule,
    make_optimizer,
)
from mtl_jax.experiment.loading import LoadedRun, evaluate_run, load_run
from mtl_jax.experiment.loop import NonFiniteError, train_and_evaluate
from mtl_jax.experiment.preemption import Preempted
from mtl_jax.experiment.records import format_results
from mtl_jax.experiment.run_data import check_data, load_data

__all__ = [
    "Experiment",
    "LoadedRun",
    "NonFiniteError",
    "Preempted",
    "build_experiment",
    "check_data",
    "default_data_dir",
    "evaluate_run",
    "format_results",
    "learning_rate_schedule",
    "load_data",
    "load_run",
    "make_optimizer",
    "train_and_evaluate",
]
