"""Class-imbalance tools on long-tailed MultiMNIST: five ways to train `left`, several seeds.

    python -m benchmarks.longtail --workdir runs/longtail --seeds 0,1,2 \
        --out benchmarks/results/multi_mnist_longtail

Every run is the `multi_mnist_longtail` config (its `left` train digits long-tailed with
imbalance ratio 100, class 0 the most frequent and class 9 the rarest; the test split
balanced) with `equal` weighting, in its own process and workdir
`<workdir>/<variant>/seed<k>`, validated, resumed and reused exactly as a sweep's runs
are (`experiments.sweep`: a workdir holding a different config stops the benchmark).
The variants change only how `left` is trained (`VARIANTS`).

Writes into `--out`: `longtail.json` (per variant and seed the reported metrics, and the
mean and sample std over seeds, with every run's provenance) and `longtail.md` (the
table: `left` accuracy, balanced accuracy, macro-F1, the mean recall of the three rarest
(tail) and the three most frequent (head) classes, and the other tasks' headline
metrics).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CONFIG = "multi_mnist_longtail"
# Variant name -> config overrides (all on top of `equal`).
VARIANTS = {
    "cross_entropy": [],
    "focal": ["--config.task_options.left.loss_type=focal"],
    "class_weights": ["--config.task_options.left.class_weights=balanced"],
    "logit_adjusted": ["--config.task_options.left.loss_type=logit_adjusted"],
    "balanced_sampler": [
        "--config.dataset.sampler=class_balanced",
        "--config.dataset.sampler_task=left",
    ],
}
# The three rarest and the three most frequent `left` classes of the long-tailed build.
TAIL, HEAD = ("7", "8", "9"), ("0", "1", "2")
COLUMNS = {
    "left/accuracy": "left acc",
    "left/balanced_accuracy": "left bal. acc",
    "left/macro_f1": "left macro-F1",
    "left/tail_recall": "left tail recall (7-9)",
    "left/head_recall": "left head recall (0-2)",
    "right/accuracy": "right acc",
    "boundary/ods_f": "boundary ODS-F",
}


def reported(results: dict) -> dict[str, float]:
    """A run's final test metrics with the tail and head recalls of `left` added."""
    final = dict(results["final"])
    final["left/tail_recall"] = float(np.mean([final[f"left/recall/{c}"] for c in TAIL]))
    final["left/head_recall"] = float(np.mean([final[f"left/recall/{c}"] for c in HEAD]))
    return final


def to_markdown(summary: dict, seeds: Sequence[int]) -> str:
    lines = [
        f"# Long-tailed MultiMNIST: `left` imbalance tools ({len(seeds)} seeds: "
        f"{', '.join(map(str, seeds))})",
        "",
        "Mean ± sample std over seeds of the final test evaluation (fractions). "
        "`python -m benchmarks.longtail` (see its docstring).",
        "",
        "| variant | " + " | ".join(COLUMNS.values()) + " |",
        "| --- |" + " --- |" * len(COLUMNS),
    ]
    for variant, stats in summary.items():
        cells = [f"{stats['mean'][k]:.4f} ± {stats['std'][k]:.4f}" for k in COLUMNS]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from experiments import sweep
    from mtl_jax import provenance
    from mtl_jax import workdir as wd

    parser = argparse.ArgumentParser(prog="python -m benchmarks.longtail")
    parser.add_argument("--workdir", required=True, help="root of the runs' workdirs")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", required=True, help="directory of longtail.json/.md")
    parser.add_argument("--overwrite", action="store_true", help="rerun stale workdirs")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; valid: {list(VARIANTS)}")
    root = Path(args.workdir)
    runs = [
        sweep.PlannedRun(
            root / variant / f"seed{seed}",
            [*VARIANTS[variant], "--config.weighting.name=equal", f"--config.seed={seed}"],
        )
        for variant in variants
        for seed in seeds
    ]
    problems = sweep.check_runs(CONFIG, runs)
    if problems and not args.overwrite:
        print("\n".join(["[longtail] not started:", *problems]), file=sys.stderr)
        return 2
    failed = sweep.execute(CONFIG, runs, overwrite=args.overwrite)
    if failed:
        print(f"[longtail] {len(failed)} run(s) failed: {failed}", file=sys.stderr)
        return 1
    per_run, summary = {}, {}
    for variant in variants:
        metrics = {}
        for seed in seeds:
            workdir = root / variant / f"seed{seed}"
            results = json.loads((workdir / wd.RESULTS_FILE).read_text())
            metrics[seed] = reported(results)
            per_run[f"{variant}/seed{seed}"] = {
                "metrics": metrics[seed],
                "provenance": results["provenance"],
                "train_wall_s": results["train_wall_s"],
            }
        keys = sorted(metrics[seeds[0]])
        values = {k: [metrics[s][k] for s in seeds] for k in keys}
        summary[variant] = {
            "mean": {k: float(np.mean(v)) for k, v in values.items()},
            "std": {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": provenance.collect(),
        "config": CONFIG,
        "variants": {v: VARIANTS[v] for v in variants},
        "seeds": seeds,
        "summary": summary,
        "runs": per_run,
    }
    (out / "longtail.json").write_text(json.dumps(record, indent=2) + "\n")
    table = to_markdown(summary, seeds)
    (out / "longtail.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
