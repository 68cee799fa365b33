"""Your own model, task and dataset trained by mtl_jax's jitted step, without the runner.

Run from the repository root: `python docs/examples/train_custom.py` (this directory is
then on `sys.path`, so `my_data`, `my_model` and `my_methods` import).
"""

from __future__ import annotations

import my_data
import my_model
import optax

from mtl_jax import data, train, weighting

tasks = my_data.SPEC.tasks()
names = sorted(tasks)
source = data.prepare(my_data.SPEC, config="default", data_dir="")
splits = {split: data.load_split(source, split) for split in ("train", "test")}

model = my_model.build(tasks)
method = weighting.create("my_methods:norm_balance", relax=0.5)
tx = optax.adam(3e-3)

batches = data.train_batches(splits["train"], names, batch_size=64, seed=0)
first = next(batches)
state = train.create_train_state(model, tx, method, first["image"], seed=0)
step = train.make_train_step(model, tasks, tx, method)

evaluate_step = train.make_eval_step(model, tasks)


def evaluate(state):
    test = data.eval_batches(splits["test"], names, batch_size=128)
    return train.evaluate(evaluate_step, state.params, state.batch_stats, test, tasks)


before = evaluate(state)
batch = first
for _ in range(150):
    state, metrics = step(state, batch)
    batch = next(batches)
after = evaluate(state)
for key in sorted(after):
    print(f"{key:24s} {before[key]:8.4f} -> {after[key]:8.4f}")
weights = {name: round(float(w), 3) for name, w in zip(names, metrics["weights"], strict=True)}
print("last weights", weights)
