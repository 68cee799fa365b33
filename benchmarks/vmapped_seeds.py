"""S seeds of one method in one program (`jax.vmap` over the TrainState) vs one after another.

::

    python -m benchmarks.vmapped_seeds --workload W1 --method equal --seeds 8 \\
        --batch-size 128 --json vmapped.json

The S train states are `create_train_state(..., seed=s)` for s = 0 … S−1 (different
initialisations, PRNG streams and method states), and each seed gets its own batch (the
workload's batch with its rows permuted by seed), as the seeds of a sweep see different
data orders (`--same-batch`: all on seed 0's batch). Two ways to advance all S seeds by
one step, timed interleaved in this process (one round of each, alternating, `--warmup`
rounds first, then `--steps`):

* `sequential_s`: the jitted single-seed step called S times (each call on its own
  state and batch), then `jax.block_until_ready` on all S results;
* `vmapped_s`: one call of `jax.jit(jax.vmap(step))` on the stacked states and batches
  `[S, B, ...]`, then `jax.block_until_ready`.

`ratio = median(vmapped_s) / median(sequential_s)` (below 1: the vmapped program is
faster). The check `max_abs_param_difference`: after the timed rounds both ways have run
the same steps from the same states, so each seed's parameters must agree up to float
reassociation (XLA may lower the vmapped convolutions as grouped ones, which sum in
another order); the largest absolute difference over all parameters is reported.

`--batch-size` replaces the workload's batch size (rows are taken from a batch of the
workload's shape drawn with the same seed, repeated if needed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import step_time, workloads
from mtl_jax import train, weighting


def seed_batches(batch: dict, seeds: int, batch_size: int | None) -> list[dict]:
    """One batch per seed: the workload batch's rows permuted by the seed (and resized)."""
    size = batch["image"].shape[0]
    batch_size = batch_size or size
    out = []
    for s in range(seeds):
        rows = np.random.default_rng([s]).permutation(np.arange(max(size, batch_size)) % size)
        rows = jnp.asarray(rows[:batch_size])
        out.append(jax.tree.map(lambda x, rows=rows: x[rows], batch))
    return out


def run(
    workload_name: str,
    method: str,
    *,
    seeds: int,
    batch_size: int | None,
    steps: int,
    warmup: int,
    rep_grad: bool = False,
    same_batch: bool = False,
) -> dict:
    workload = workloads.build(workload_name)
    method_fn = weighting.create(
        method, **step_time.method_options(method, workload.model.task_names)
    )
    rep_grad = rep_grad and method_fn.kind != weighting.LOSS
    tx = optax.adam(workload.learning_rate)
    batches = seed_batches(workload.batch, seeds, batch_size)
    if same_batch:
        batches = [batches[0]] * seeds
    states = [
        train.create_train_state(
            workload.model, tx, method_fn, batches[0]["image"], seed=s, rep_grad=rep_grad
        )
        for s in range(seeds)
    ]
    step = train.make_train_step(
        workload.model, workload.tasks, tx, method_fn, rep_grad=rep_grad, jit=False
    )
    single = jax.jit(step)
    vmapped = jax.jit(jax.vmap(step))
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
    stacked_batch = jax.tree.map(lambda *x: jnp.stack(x), *batches)

    def sequential_round():
        nonlocal states
        states = [single(state, b)[0] for state, b in zip(states, batches, strict=True)]
        jax.block_until_ready(states)

    def vmapped_round():
        nonlocal stacked
        stacked = vmapped(stacked, stacked_batch)[0]
        jax.block_until_ready(stacked)

    sequential_s, vmapped_s = [], []
    for i in range(warmup + steps):
        for call, times in ((sequential_round, sequential_s), (vmapped_round, vmapped_s)):
            start = time.perf_counter()
            call()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    difference = _max_difference(stacked, states)
    return {
        "workload": workload_name,
        "method": method,
        "rep_grad": rep_grad,
        "same_batch": same_batch,
        "seeds": seeds,
        "batch_size": int(batches[0]["image"].shape[0]),
        "steps": steps,
        "warmup": warmup,
        "sequential_s": sequential_s,
        "vmapped_s": vmapped_s,
        "sequential_median_s": statistics.median(sequential_s),
        "vmapped_median_s": statistics.median(vmapped_s),
        "ratio": statistics.median(vmapped_s) / statistics.median(sequential_s),
        "max_abs_param_difference": difference,
        "devices": [str(d) for d in jax.devices()],
        "jax_version": jax.__version__,
    }


def _max_difference(stacked: train.TrainState, states: Sequence[train.TrainState]) -> float:
    """Largest |vmapped − sequential| over every seed's parameters."""
    worst = 0.0
    for s, state in enumerate(states):
        pairs = zip(jax.tree.leaves(stacked.params), jax.tree.leaves(state.params), strict=True)
        for many, one in pairs:
            worst = max(worst, float(jnp.max(jnp.abs(many[s] - one))))
    return worst


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="W1", choices=list(workloads.WORKLOADS))
    parser.add_argument("--method", default="equal")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rep-grad", action="store_true")
    parser.add_argument(
        "--same-batch", action="store_true", help="every seed steps on seed 0's batch"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.warmup < 1:
        parser.error("--seeds, --steps and --warmup must be >= 1")
    result = run(
        args.workload,
        args.method,
        seeds=args.seeds,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        rep_grad=args.rep_grad,
        same_batch=args.same_batch,
    )
    print(
        f"{args.workload} {args.method} S={args.seeds}: vmapped "
        f"{1e3 * result['vmapped_median_s']:.1f} ms, sequential "
        f"{1e3 * result['sequential_median_s']:.1f} ms, ratio {result['ratio']:.3f}, "
        f"max |Δparam| {result['max_abs_param_difference']:.2e}",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
