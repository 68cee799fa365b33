"""Δm% and Δp against hand-computed values and the published NYUv2 / CityScapes tables."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_jax.metrics import BENCHMARKS, delta_m, delta_p, metric_directions
from mtl_jax.tasks import Classification, Depth, Segmentation, SurfaceNormal

_NYUV2_KEYS = (
    "segmentation/miou",
    "segmentation/pixel_accuracy",
    "depth/abs_err",
    "depth/rel_err",
    "normal/mean_angle",
    "normal/median_angle",
    "normal/within_11.25",
    "normal/within_22.5",
    "normal/within_30",
)
_NYUV2_DECIMALS = (2, 2, 4, 4, 2, 2, 2, 2, 2)
_CITYSCAPES_KEYS = _NYUV2_KEYS[:4]
_CITYSCAPES_DECIMALS = (2, 2, 4, 2)

# Published per-metric rows and Δm% of SegNet-MTAN methods (mean of 3 seeds).
# NYU-v2: FAMO (Liu et al., NeurIPS 2023), table "Results on NYU-v2 (3-task)"; the LS to
# Nash-MTL rows are those of Nash-MTL (Navon et al., ICML 2022) Table 2. The rows were
# read from NTKMTL (arXiv 2025) Table 1, which reprints them with the FAMO, DB-MTL and
# FairGrad rows, and checked against a second reprint (the same digits).
NYUV2_ROWS = {
    "LS": ((39.29, 65.33, 0.5493, 0.2263, 28.15, 23.96, 22.09, 47.50, 61.08), 5.59),
    "SI": ((38.45, 64.27, 0.5354, 0.2201, 27.60, 23.37, 22.53, 48.57, 62.32), 4.39),
    "RLW": ((37.17, 63.77, 0.5759, 0.2410, 28.27, 24.18, 22.26, 47.05, 60.62), 7.78),
    "DWA": ((39.11, 65.31, 0.5510, 0.2285, 27.61, 23.18, 24.17, 50.18, 62.39), 3.57),
    "UW": ((36.87, 63.17, 0.5446, 0.2260, 27.04, 22.61, 23.54, 49.05, 63.65), 4.05),
    "MGDA": ((30.47, 59.90, 0.6070, 0.2555, 24.88, 19.45, 29.18, 56.88, 69.36), 1.38),
    "PCGrad": ((38.06, 64.64, 0.5550, 0.2325, 27.41, 22.80, 23.86, 49.83, 63.14), 3.97),
    "GradDrop": ((39.39, 65.12, 0.5455, 0.2279, 27.48, 22.96, 23.38, 49.44, 62.87), 3.58),
    "CAGrad": ((39.79, 65.49, 0.5486, 0.2250, 26.31, 21.58, 25.61, 52.36, 65.58), 0.20),
    "Nash-MTL": ((40.13, 65.93, 0.5261, 0.2171, 25.26, 20.08, 28.40, 55.47, 68.15), -4.04),
    "FAMO": ((38.88, 64.90, 0.5474, 0.2194, 25.06, 19.57, 29.21, 56.61, 68.98), -4.10),
    "DB-MTL": ((41.42, 66.45, 0.5251, 0.2160, 25.03, 19.50, 28.72, 56.17, 68.73), -5.36),
    "FairGrad": ((39.74, 66.01, 0.5377, 0.2236, 24.84, 19.60, 29.26, 56.58, 69.16), -4.66),
}
# IMTL-G's published row (39.35 65.60 0.5426 0.2256 26.02 21.19 26.20 53.13 66.24) gives
# Δm = −0.60, not the published −0.76, beyond what rounding can explain; it is left out.

# These reproduce to two decimals from the rounded rows; the others differ in the last
# digit because the published Δm was computed from unrounded per-seed metrics.
NYUV2_EXACT = ("LS", "SI", "RLW", "DWA", "MGDA", "PCGrad", "GradDrop", "FAMO", "DB-MTL")

# CityScapes: the same sources' CityScapes table (7-class segmentation, inverse depth).
CITYSCAPES_ROWS = {
    "LS": ((75.18, 93.49, 0.0155, 46.77), 22.60),
    "UW": ((72.02, 92.85, 0.0140, 30.13), 5.89),
    "MGDA": ((68.84, 91.54, 0.0309, 33.50), 44.14),
    "PCGrad": ((75.13, 93.48, 0.0154, 42.07), 18.29),
    "CAGrad": ((75.16, 93.48, 0.0141, 37.60), 11.64),
    "Nash-MTL": ((75.41, 93.66, 0.0129, 35.02), 6.82),
    "FAMO": ((74.54, 93.29, 0.0145, 32.59), 8.13),
}


def _rounding_bound(row, baseline, decimals) -> float:
    """Largest change of Δm% that rounding the published numbers can cause.

    Each metric and baseline value is off by at most half a unit of its last digit, and
    the published Δm by 0.005.
    """
    total = 0.0
    for m, b, d in zip(row, baseline, decimals, strict=True):
        half = 0.5 * 10.0**-d
        total += half / b * (1 + m / b)
    return 100.0 * total / len(row) + 0.005


@pytest.mark.parametrize("method", sorted(NYUV2_ROWS))
def test_delta_m_reproduces_published_nyuv2_rows(method):
    row, published = NYUV2_ROWS[method]
    results = dict(zip(_NYUV2_KEYS, row, strict=True))
    value = delta_m(results, "nyuv2")
    baseline = [BENCHMARKS["nyuv2"].baseline[k] for k in _NYUV2_KEYS]
    assert abs(value - published) <= _rounding_bound(row, baseline, _NYUV2_DECIMALS)
    if method in NYUV2_EXACT:
        assert round(value, 2) == published


@pytest.mark.parametrize("method", sorted(CITYSCAPES_ROWS))
def test_delta_m_reproduces_published_cityscapes_rows(method):
    row, published = CITYSCAPES_ROWS[method]
    results = dict(zip(_CITYSCAPES_KEYS, row, strict=True))
    value = delta_m(results, "cityscapes")
    baseline = [BENCHMARKS["cityscapes"].baseline[k] for k in _CITYSCAPES_KEYS]
    assert abs(value - published) <= _rounding_bound(row, baseline, _CITYSCAPES_DECIMALS)
    if method in ("FAMO", "MGDA"):
        assert round(value, 2) == published


def test_delta_m_by_hand_with_custom_baseline():
    baseline = {"a/acc": 50.0, "b/err": 2.0}
    directions = {"a/acc": 1, "b/err": -1}
    # acc +10% (better), err +50% (worse): Δm = (−10 + 50) / 2 = 20.
    results = {"a/acc": 55.0, "b/err": 3.0, "a/loss": 0.3}
    assert delta_m(results, baseline, directions=directions) == pytest.approx(20.0)
    assert delta_m(dict(baseline), baseline, directions=directions) == 0.0


def test_delta_p_weighs_tasks_equally_and_higher_is_better():
    baseline = {"a/x": 10.0, "a/y": 10.0, "b/z": 1.0}
    directions = {"a/x": 1, "a/y": 1, "b/z": -1}
    results = {"a/x": 12.0, "a/y": 10.0, "b/z": 0.5}
    # Task a: mean(+20%, 0) = 10%; task b: +50% → Δp = 30%. Δm = −(20 + 0 + 50) / 3.
    assert delta_p(results, baseline, directions=directions) == pytest.approx(30.0)
    assert delta_m(results, baseline, directions=directions) == pytest.approx(-70 / 3)


def test_delta_p_matches_libmtl_docstring_example():
    # LibMTL `count_improvement` example: base A=[96, 98] (w=[1, 0]), B=[0.2] (w=[1]);
    # new A=[93, 99], B=[0.5]. Per task: A = mean(−3/96, −1/98), B = 0.3/0.2.
    baseline = {"A/m0": 96.0, "A/m1": 98.0, "B/m0": 0.2}
    results = {"A/m0": 93.0, "A/m1": 99.0, "B/m0": 0.5}
    directions = {"A/m0": 1, "A/m1": -1, "B/m0": 1}
    expected = 100 * (np.mean([-3 / 96, -1 / 98]) + 1.5) / 2
    assert delta_p(results, baseline, directions=directions) == pytest.approx(expected)


def test_errors_name_the_problem():
    results = dict(zip(_NYUV2_KEYS, NYUV2_ROWS["FAMO"][0], strict=True))
    del results["normal/median_angle"]
    with pytest.raises(ValueError, match=r"lack metric\(s\) \['normal/median_angle'\]"):
        delta_m(results, "nyuv2")
    with pytest.raises(
        ValueError,
        match=r"unknown benchmark 'nyu'.*'cityscapes', 'multi_mnist', 'nyuv2', 'shapes_dense'",
    ):
        delta_m(results, "nyu")
    with pytest.raises(ValueError, match="needs `directions`"):
        delta_m({"a/x": 1.0}, {"a/x": 2.0})
    with pytest.raises(ValueError, match=r"no direction given for baseline metric\(s\) \['a/y'\]"):
        delta_m({"a/x": 1.0, "a/y": 1.0}, {"a/x": 2.0, "a/y": 1.0}, directions={"a/x": 1})
    with pytest.raises(ValueError, match=r"\+1 or -1, got \{'a/x': 0\}"):
        delta_m({"a/x": 1.0}, {"a/x": 2.0}, directions={"a/x": 0})
    with pytest.raises(ValueError, match=r"\['a/x'\] are 0"):
        delta_p({"a/x": 1.0}, {"a/x": 0.0}, directions={"a/x": 1})


def test_benchmark_directions_agree_with_the_tasks():
    """The shipped benchmark definitions use the tasks' own metric names and directions."""
    tasks = {
        "segmentation": Segmentation("segmentation", 13, height=2, width=2),
        "depth": Depth("depth", height=2, width=2),
        "normal": SurfaceNormal("normal", height=2, width=2),
    }
    directions = metric_directions(tasks)
    # The offline benchmarks use their datasets' own tasks.
    from mtl_jax import data

    directions.update(metric_directions(data.DATASETS["multi_mnist"].tasks()))
    for benchmark in BENCHMARKS.values():
        assert set(benchmark.baseline) == set(benchmark.directions)
        for key, direction in benchmark.directions.items():
            assert directions[key] == direction
    assert metric_directions({"left": Classification("left")}) == {"left/accuracy": 1}
    every = metric_directions({"left": Classification("left")}, every_metric=True)
    assert {"left/accuracy", "left/macro_f1", "left/recall/9"} <= set(every)
    assert set(every.values()) == {1}


@pytest.mark.parametrize("name", ["multi_mnist", "shapes_dense"])
def test_offline_baselines_ship_with_their_provenance(name):
    from mtl_jax.metrics import BENCHMARKS

    benchmark = BENCHMARKS[name]
    assert set(benchmark.baseline) == set(benchmark.directions)
    assert "sweep --stl" in benchmark.source and "seeds 0-2" in benchmark.source
    # One percent better than STL on every metric is Δm% = −1, whatever the directions.
    better = {
        key: value * (1 + 0.01 * benchmark.directions[key])
        for key, value in benchmark.baseline.items()
    }
    assert delta_m(better, name) == pytest.approx(-1.0)
    assert delta_m(dict(benchmark.baseline), name) == pytest.approx(0.0)
