"""Multi-task summary scores against single-task baselines: Δm% and LibMTL's Δp.

Results are flat mappings `{"<task>/<metric>": value}` (what `train.evaluate` returns),
in the units the tasks report (percent for mIoU, pixel accuracy and the normal
thresholds; degrees for angles; depth errors as plain numbers). A baseline is either
the name of a benchmark whose single-task (STL) numbers ship with the library
(`BENCHMARKS`) or a mapping in the same format. Each metric's direction is +1 where
higher is better and −1 where lower is better; for a named benchmark the directions are
part of its definition, for a custom baseline they come from the caller (e.g.
`metric_directions(tasks)`).

`delta_m(results, "nyuv2")` gives −4.10 for FAMO's published NYUv2 row.

Examples:
    >>> from mtl_jax.metrics import delta_m
    >>> baseline = {"seg/miou": 40.0, "depth/abs_err": 0.5}
    >>> directions = {"seg/miou": +1, "depth/abs_err": -1}
    >>> results = {"seg/miou": 42.0, "depth/abs_err": 0.55}  # +5% and -10%
    >>> round(delta_m(results, baseline, directions=directions), 2)  # worse on average
    2.5
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from mtl_jax.tasks import HIGHER_IS_BETTER, LOWER_IS_BETTER, Task


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A benchmark's metrics, their directions and its single-task baseline values.

    Attributes:
      baseline: `{"<task>/<metric>": STL value}`, in the units the tasks report.
      directions: `{"<task>/<metric>": +1 if higher is better else -1}`, same keys.
      source: where the baseline numbers come from.
    """

    baseline: Mapping[str, float]
    directions: Mapping[str, int]
    source: str


_UP, _DOWN = HIGHER_IS_BETTER, LOWER_IS_BETTER

# NYUv2's nine metrics; `shapes_dense` has the same three task kinds and metric names.
_NYUV2_DIRECTIONS = {
    "segmentation/miou": _UP,
    "segmentation/pixel_accuracy": _UP,
    "depth/abs_err": _DOWN,
    "depth/rel_err": _DOWN,
    "normal/mean_angle": _DOWN,
    "normal/median_angle": _DOWN,
    "normal/within_11.25": _UP,
    "normal/within_22.5": _UP,
    "normal/within_30": _UP,
}

# SegNet single-task baselines of the MTAN protocol as tabulated by CAGrad (Liu et al.
# NeurIPS 2021), Nash-MTL (Navon et al. ICML 2022, Table 2) and FAMO (Liu et al. NeurIPS
# 2023): test split, mean of the last 10 epochs.
BENCHMARKS: dict[str, Benchmark] = {
    "nyuv2": Benchmark(
        baseline={
            "segmentation/miou": 38.30,
            "segmentation/pixel_accuracy": 63.76,
            "depth/abs_err": 0.6754,
            "depth/rel_err": 0.2780,
            "normal/mean_angle": 25.01,
            "normal/median_angle": 19.21,
            "normal/within_11.25": 30.14,
            "normal/within_22.5": 57.20,
            "normal/within_30": 69.15,
        },
        directions=_NYUV2_DIRECTIONS,
        source="STL row of Nash-MTL (ICML 2022) Table 2 / FAMO (NeurIPS 2023) NYU-v2 table",
    ),
    "cityscapes": Benchmark(
        baseline={
            "segmentation/miou": 74.01,
            "segmentation/pixel_accuracy": 93.16,
            "depth/abs_err": 0.0125,
            "depth/rel_err": 27.77,
        },
        directions={
            "segmentation/miou": _UP,
            "segmentation/pixel_accuracy": _UP,
            "depth/abs_err": _DOWN,
            "depth/rel_err": _DOWN,
        },
        source="STL row of Nash-MTL (ICML 2022) / FAMO (NeurIPS 2023) CityScapes table",
    ),
    # Offline benchmarks, measured by mtl_jax itself: each task trained alone with the
    # full config (`equal` on one task), mean of seeds 0, 1, 2 of the final evaluation
    # on the test split. Measured 2026-12-07 on 2 CPU cores (jax 0.10.2, commit 3c726a1):
    #   python -m experiments.sweep --config experiments/configs/multi_mnist.py \
    #       --workdir runs/mm --methods equal --seeds 0,1,2 --stl
    # Seed spread (sample std): boundary f1 0.0096, ods_f 0.0104; left 0.0036, right 0.0024.
    "multi_mnist": Benchmark(
        baseline={
            "boundary/f1": 0.58414,
            "boundary/ods_f": 0.61067,
            "left/accuracy": 0.90247,
            "right/accuracy": 0.86643,
        },
        directions={
            "boundary/f1": _UP,
            "boundary/ods_f": _UP,
            "left/accuracy": _UP,
            "right/accuracy": _UP,
        },
        source="mtl_jax single-task runs of experiments/configs/multi_mnist.py "
        "(sweep --stl, seeds 0-2, final evaluation, 2026-12-07)",
    ),
    # Same protocol for shapes_dense, reported as the mean of the last 3 evaluations
    # (steps 300, 400, 500: the NYUv2 protocol's "last evaluations", scaled down):
    #   python -m experiments.sweep --config experiments/configs/shapes_dense.py \
    #       --workdir runs/dense --methods equal --seeds 0,1,2 --stl --last-evals 3
    # Seed spread (sample std): miou 0.43, pixel_accuracy 0.071, abs_err 0.0045,
    # rel_err 0.0025, mean_angle 0.55, median_angle 0.32, within 1.7 / 0.60 / 0.27.
    "shapes_dense": Benchmark(
        baseline={
            "segmentation/miou": 89.376,
            "segmentation/pixel_accuracy": 98.342,
            "depth/abs_err": 0.07222,
            "depth/rel_err": 0.04431,
            "normal/mean_angle": 3.6733,
            "normal/median_angle": 1.2861,
            "normal/within_11.25": 90.771,
            "normal/within_22.5": 97.726,
            "normal/within_30": 99.132,
        },
        directions=_NYUV2_DIRECTIONS,
        source="mtl_jax single-task runs of experiments/configs/shapes_dense.py "
        "(sweep --stl, seeds 0-2, mean of the last 3 evaluations, 2026-12-07)",
    ),
}


def metric_directions(tasks: Mapping[str, Task], *, every_metric: bool = False) -> dict[str, int]:
    """`{"<task>/<metric>": ±1}`, keyed like `evaluate`, for each task's headline metrics
    (`Task.headline_metrics`: what sweep tables and Δm% compare, e.g. `accuracy` of a
    classification task), or for every metric it reports with `every_metric=True`."""
    directions = {}
    for name, task in tasks.items():
        task_directions = task.metric_directions()
        chosen = task_directions if every_metric else task.headline_metrics()
        directions.update({f"{name}/{metric}": task_directions[metric] for metric in chosen})
    return directions


def _resolve(
    baseline: str | Mapping[str, float], directions: Mapping[str, int] | None
) -> tuple[dict[str, float], dict[str, int]]:
    """The baseline values and directions, validated; see `delta_m`."""
    if isinstance(baseline, str):
        if baseline not in BENCHMARKS:
            raise ValueError(
                f"unknown benchmark {baseline!r}; benchmarks with shipped baselines: "
                f"{sorted(BENCHMARKS)} (or pass a mapping of baseline values)"
            )
        benchmark = BENCHMARKS[baseline]
        values = dict(benchmark.baseline)
        directions = benchmark.directions if directions is None else directions
    else:
        values = dict(baseline)
        if directions is None:
            raise ValueError(
                "a custom baseline needs `directions` ({metric: +1 if higher is better "
                "else -1}); `metric_directions(tasks)` builds them from the tasks"
            )
    if not values:
        raise ValueError("the baseline has no metrics")
    missing = sorted(set(values) - set(directions))
    if missing:
        raise ValueError(f"no direction given for baseline metric(s) {missing}")
    bad = {k: directions[k] for k in values if directions[k] not in (_UP, _DOWN)}
    if bad:
        raise ValueError(f"directions must be +1 or -1, got {bad}")
    zero = sorted(k for k, v in values.items() if v == 0)
    if zero:
        raise ValueError(f"baseline metric(s) {zero} are 0; relative changes are undefined")
    return values, {k: int(directions[k]) for k in values}


def _relative_gains(
    results: Mapping[str, float],
    baseline: str | Mapping[str, float],
    directions: Mapping[str, int] | None,
) -> dict[str, float]:
    """`{metric: d_k (M_m,k − M_b,k) / M_b,k}` over the baseline's metrics (+ is better)."""
    values, signs = _resolve(baseline, directions)
    missing = sorted(set(values) - set(results))
    if missing:
        raise ValueError(
            f"results lack metric(s) {missing} needed by the baseline; "
            f"results have {sorted(results)}"
        )
    return {k: signs[k] * (float(results[k]) - b) / b for k, b in values.items()}


def delta_m(
    results: Mapping[str, float],
    baseline: str | Mapping[str, float],
    *,
    directions: Mapping[str, int] | None = None,
) -> float:
    """Δm%: the mean relative change of every metric against a baseline; negative is better.

    Maninis et al. (CVPR 2019, Eq. 4), as used by CAGrad, Nash-MTL and FAMO::

        Δm% = (100 / K) Σ_k (−1)^{δ_k} (M_m,k − M_b,k) / M_b,k

    over the K metrics of the baseline, with δ_k = 1 where higher is better. Every metric
    counts once (a task with more metrics weighs more). Keys of `results` that the
    baseline does not have (losses, other metrics) are ignored.

    Args:
      results: `{"<task>/<metric>": value}` of the evaluated model.
      baseline: a benchmark name in `BENCHMARKS` ("nyuv2", "cityscapes", and the offline
        "multi_mnist", "shapes_dense") or a mapping
        `{"<task>/<metric>": STL value}`.
      directions: `{"<task>/<metric>": +1 | -1}`; defaults to the benchmark's own, and
        is required with a custom baseline.

    Returns:
      Δm in percent.

    Raises:
      ValueError: unknown benchmark; a baseline metric missing from `results` or from
        `directions` (the message names it); a direction other than ±1; a zero baseline.
    """
    gains = _relative_gains(results, baseline, directions)
    return float(-100.0 * np.mean(list(gains.values())))


def delta_p(
    results: Mapping[str, float],
    baseline: str | Mapping[str, float],
    *,
    directions: Mapping[str, int] | None = None,
) -> float:
    """LibMTL's Δp: the mean over tasks of each task's mean relative improvement.

    Lin & Zhang, LibMTL (JMLR 2023), `count_improvement`::

        Δp = (100 / T) Σ_t (1 / M_t) Σ_m (−1)^{w_t,m} (B_t,m − N_t,m) / B_t,m

    with w = 1 where higher is better: **positive is better**, and each task weighs the
    same whatever its number of metrics (unlike `delta_m`). Tasks are the key prefixes
    before "/". LibMTL's code returns the fraction; this returns percent, as its
    documented formula does. LibMTL's trainer uses the run's own first evaluation as the
    default base; here the baseline is always explicit (pass that evaluation's results
    as a mapping to reproduce it). Arguments and errors as in `delta_m`.
    """
    gains = _relative_gains(results, baseline, directions)
    per_task: dict[str, list[float]] = {}
    for key, gain in gains.items():
        per_task.setdefault(key.split("/", 1)[0], []).append(gain)
    return float(100.0 * np.mean([np.mean(v) for v in per_task.values()]))
