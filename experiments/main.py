"""Runs one experiment.

    python -m experiments.main --config experiments/configs/multi_mnist.py --workdir DIR \
        [--config.key=value ...]

Exit status: 0 on success; 2 for an invalid config, an unusable workdir or bad data (the
message names the key, path or task); 3 when training stops on a non-finite loss.
"""

from __future__ import annotations

import argparse
import sys

from mtl_jax.config import ConfigError, load_config
from mtl_jax.experiment import format_results, train_and_evaluate

EXIT_INVALID = 2
EXIT_NON_FINITE = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="path to a config file")
    parser.add_argument("--workdir", required=True, help="output directory (new or empty)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognized argument {item!r} (overrides look like --config.key=value)")
        overrides.append(item[len("--config.") :])
    try:
        config = load_config(args.config, overrides)
        results = train_and_evaluate(config, args.workdir, progress=not args.no_progress)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NON_FINITE
    print(format_results(results["final"]))
    print(f"steps: {results['steps']}  wall: {results['wall_s']:.1f}s  workdir: {args.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
