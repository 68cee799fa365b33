"""How much of a training run's time is the jitted step: the loop overhead of `make train`.

::

    python -m benchmarks.loop_overhead --config experiments/configs/multi_mnist.py \\
        --method equal --steps 1000 --json loop_equal.json

In one process:

1. `experiments.main`'s `train_and_evaluate` trains the config (with `--steps` steps and
   the given `--override`s) in a fresh temporary workdir, as `make train` does (progress
   bar on, written to a null stream). Its `results.json` gives `train_wall_s` (the
   training loop, from before the first step until the last step is done; the final
   evaluation and saving are not in it) and `first_step_s` (the first step,
   compilation included).
2. The same jitted, guarded, data-parallel train step (`parallel.make_parallel_train_step`
   with the config's options) is built again and timed alone on one fixed batch that is
   already on the device: `--reference-steps` steps after 3 warm-up steps, each closed by
   `jax.block_until_ready`; `step_median_s` is their median.

`overhead_ratio = (train_wall_s − first_step_s) / ((steps − 1) × step_median_s)`: the
loop's steady-state time over the time of the bare steps it ran (1.0 means the loop
adds nothing; the target of issue 18 is ≤ 1.05). Steps whose time the loop spends in
checkpoint saves and periodic evaluations are inside `train_wall_s` too, so the ratio
reports them as overhead; `--override checkpoint_every_steps=0` etc. separates them.

`--variants` runs several such measurements one after another (each also in this
process), e.g. `--variants conflict_every_steps=0`: each variant's overrides are added to
the common ones. The JSON lists one object per variant with the fields above and the
config overrides used.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from mtl_jax import config as mcfg
from mtl_jax import parallel
from mtl_jax.experiment.builders import build_experiment, step_options
from mtl_jax.experiment.loop import train_and_evaluate
from mtl_jax.experiment.run_data import load_data, make_train_batches, with_train_data
from mtl_jax.train import create_train_state


def reference_step_time(config, *, steps: int, warmup: int = 3) -> dict:
    """Median seconds of the run's jitted train step alone on one device-resident batch."""
    exp = build_experiment(config)
    _, splits, image_shape = load_data(config, exp, ("train",))
    exp, _ = with_train_data(config, exp, splits["train"])
    mesh = parallel.make_mesh(config.parallel.num_devices)

    def init(image):
        return create_train_state(
            exp.model,
            exp.tx,
            exp.weighting,
            image,
            seed=config.seed,
            rep_grad=config.weighting.rep_grad,
        )

    example = np.zeros((config.batch_size, *image_shape), np.float32)
    abstract = jax.eval_shape(init, example)
    shardings = parallel.state_shardings(
        abstract, mesh, min_size=config.parallel.shard_params_min_size
    )
    state = jax.jit(init, out_shardings=shardings)(example)
    step = parallel.make_parallel_train_step(
        exp.model,
        exp.tasks,
        exp.tx,
        exp.weighting,
        mesh=mesh,
        state_sharding=shardings,
        **step_options(config),
    )
    batch = parallel.shard_batch(next(make_train_batches(config, exp, splits["train"])), mesh)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"step_median_s": statistics.median(times), "step_times_s": times}


def measure(config_path: str, overrides: Sequence[str], *, reference_steps: int) -> dict:
    config = mcfg.load_config(config_path, overrides)
    with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stderr(io.StringIO()):
        results = train_and_evaluate(config, Path(workdir) / "run", progress=True)
    reference = reference_step_time(config, steps=reference_steps)
    steps = config.num_steps
    loop_s = results["train_wall_s"] - results["first_step_s"]
    ratio = loop_s / ((steps - 1) * reference["step_median_s"])
    return {
        "config": config_path,
        "overrides": list(overrides),
        "method": config.weighting.name,
        "steps": steps,
        "train_wall_s": results["train_wall_s"],
        "first_step_s": results["first_step_s"],
        "loop_steady_s": loop_s,
        **reference,
        "overhead_ratio": ratio,
        "steps_per_s": (steps - 1) / loop_s,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="experiments/configs/multi_mnist.py")
    parser.add_argument("--method", default="equal")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--reference-steps", type=int, default=50)
    parser.add_argument(
        "--override", action="append", default=[], help="KEY=VALUE, as --config.KEY=VALUE"
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[""],
        help="extra overrides per variant, comma-separated KEY=VALUE lists ('' = none)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    common = [f"weighting.name={args.method}", f"num_steps={args.steps}", *args.override]
    out = []
    for variant in args.variants:
        extra = [v for v in variant.split(",") if v]
        row = measure(args.config, common + extra, reference_steps=args.reference_steps)
        row["variant"] = variant or "default"
        out.append(row)
        print(
            f"{args.method} [{row['variant']}]: train_wall_s {row['train_wall_s']:.2f}, "
            f"first step {row['first_step_s']:.2f} s, step median "
            f"{1e3 * row['step_median_s']:.2f} ms, overhead ratio {row['overhead_ratio']:.3f}",
            file=sys.stderr,
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
