"""Runs one experiment, or resumes it when the workdir holds an unfinished run of it.

    mtl-jax train --config multi_mnist --workdir DIR [--config.key=value ...] [--overwrite]
    python -m experiments.main --config experiments/configs/multi_mnist.py --workdir DIR

`--config` takes a shipped config's name (`multi_mnist`, `test`, ...; see
`experiments/configs/`), a dotted module name (`my_project.configs.big`) or a path to a
config file, each optionally followed by `:ARG` for a `get_config(ARG)` that takes one.
`--print-config` prints the config as the run would store it (`config.json`, overrides
applied, validated as a run validates it) and exits without touching any workdir.

Besides the run's files, the workdir gets `loss_curves.png`, `task_weights.png` and (for
methods with per-task gradients) `grad_cosine.png`.

Exit status:
  0    success (or the workdir already holds this run, finished)
  2    invalid config, workdir or data; nothing compiled (the message names the key,
       path, task or shape)
  3    a non-finite loss, gradient or state (the message names the step and task; the
       metrics are written and the last checkpoint is kept)
  4    the latest checkpoint cannot be restored: corrupt, truncated, or from a model of
       other shapes (the message names its path and the leaf)
  143  stopped by SIGTERM after saving a checkpoint of the current step; rerun to resume
"""

from __future__ import annotations

import argparse
import sys

EXIT_INVALID = 2
EXIT_NON_FINITE = 3
EXIT_CHECKPOINT = 4
EXIT_PREEMPTED = 143  # 128 + SIGTERM, the shell's convention


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        required=True,
        help="a config name (e.g. multi_mnist), a dotted module or a path to a config file; "
        "NAME:ARG passes ARG to get_config",
    )
    parser.add_argument("--workdir", help="output directory (new, or a run to resume)")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the config (overrides applied, validated) as JSON and exit; runs nothing",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard the run the workdir holds (its outputs only) and start afresh",
    )
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognized argument {item!r} (overrides look like --config.key=value)")
        overrides.append(item[len("--config.") :])
    if args.print_config:
        return print_config(args.config, overrides)
    if not args.workdir:
        parser.error("the following arguments are required: --workdir")

    # Multi-process set-up comes before anything else touches the devices.
    from mtl_jax.distributed import initialize_distributed

    initialize_distributed()
    from experiments.configs import base
    from mtl_jax.checkpointing import CheckpointError
    from mtl_jax.config import ConfigError, load_config
    from mtl_jax.experiment import NonFiniteError, Preempted, format_results, train_and_evaluate

    try:
        config = load_config(args.config, overrides, reference=base.get_config())
        results = train_and_evaluate(
            config, args.workdir, progress=not args.no_progress, overwrite=args.overwrite
        )
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except NonFiniteError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NON_FINITE
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except Preempted as error:
        print(str(error), file=sys.stderr)
        return EXIT_PREEMPTED
    print(format_results(results["final"]))
    print(f"steps: {results['steps']}  wall: {results['wall_s']:.1f}s  workdir: {args.workdir}")
    return 0


def print_config(config: str, overrides: list[str]) -> int:
    """Prints the config `experiments.main` would run, exactly as its workdir's
    `config.json` would hold it, after the checks a run makes before compiling. Writes
    nothing. Returns the exit status (0, or 2 for an invalid config)."""
    import json

    from experiments.configs import base
    from mtl_jax import workdir as wd
    from mtl_jax.config import ConfigError, load_config
    from mtl_jax.experiment import build_experiment

    try:
        resolved = load_config(config, overrides, reference=base.get_config())
        build_experiment(resolved)
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(wd.config_record(resolved), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
