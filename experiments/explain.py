"""Per-task saliency maps of a finished run: `saliency.png` and `saliency.json` in its workdir.

    mtl-jax explain --workdir runs/mm [--examples 8] [--steps 256] [--rule midpoint]
    python -m experiments.explain --workdir runs/mm [--tasks left,right] [--overwrite]

For the first `--examples` test images, every task's gradient × input, integrated
gradients (`--steps` intervals, black-image baseline) and Grad-CAM (on the trunk's last
spatial feature map) maps, and per method the overlap (cosine) of every task pair's maps
(`mtl_jax.explain.report`). Prints the overlap table.

Exit status:
  0    success
  2    no finished run in the workdir, its data is missing, invalid options, or the
       outputs exist already (pass --overwrite to replace them)
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_INVALID = 2


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", required=True, help="the finished run's workdir")
    parser.add_argument(
        "--examples", type=int, default=8, help="the first N test images (default: 8)"
    )
    parser.add_argument(
        "--steps", type=int, default=256, help="integrated-gradients intervals (default: 256)"
    )
    parser.add_argument(
        "--rule",
        default="midpoint",
        choices=("midpoint", "trapezoid"),
        help="integrated-gradients Riemann rule (default: midpoint)",
    )
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: all)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace saliency.png / saliency.json"
    )
    parser.add_argument("--json", action="store_true", help="print saliency.json's contents")
    args = parser.parse_args(argv)

    from mtl_jax.distributed import initialize_distributed

    initialize_distributed()
    from mtl_jax.config import ConfigError
    from mtl_jax.explain.report import SALIENCY_JSON, SALIENCY_PNG, explain_run, format_overlap

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] or None
    try:
        summary = explain_run(
            args.workdir,
            examples=args.examples,
            steps=args.steps,
            rule=args.rule,
            tasks=tasks,
            overwrite=args.overwrite,
        )
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_overlap(summary))
        print(f"wrote {SALIENCY_PNG} and {SALIENCY_JSON} in {args.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
