"""`Boundary`'s metrics against independent computations: hand-built maps with known
answers, numpy counts, scikit-learn's average precision, a per-image OIS loop, a
pure-Python greedy matching and scipy's maximum bipartite matching."""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from sklearn.metrics import average_precision_score

from mtl_jax.tasks import Boundary
from mtl_jax.tasks.boundary import (
    average_precision,
    greedy_match,
    match_orders,
    tolerance_offsets,
)

THRESHOLDS = [k / 100 for k in range(1, 100)]  # the task's grid, 0.01 ... 0.99
HALF = THRESHOLDS.index(0.5)
EXACT = ("precision", "recall", "f1", "iou", "ods_f", "ois_f", "ap")
TOLERANT = ("precision_tol", "recall_tol", "f1_tol", "ods_f_tol", "ois_f_tol", "ap_tol")


# ---- independent references -------------------------------------------------------------


def quantised(levels):
    """Probabilities `level / 100 + 0.005`: predicted at exactly the `level` lowest
    thresholds, 0.005 away from any threshold (no rounding question), and the logits."""
    prob = np.asarray(levels, np.float64) / 100 + 0.005
    return prob, np.log(prob / (1 - prob)).astype(np.float32)[..., None]


def offsets_within(radius):
    pairs = [
        (dy, dx)
        for dy in range(-10, 11)
        for dx in range(-10, 11)
        if math.hypot(dy, dx) <= radius + 1e-12
    ]
    return sorted(pairs, key=lambda d: (d[0] ** 2 + d[1] ** 2, d[0], d[1]))


def reference_orders(radius, directions=8):
    by_distance = offsets_within(radius)
    if radius < math.sqrt(2):  # no diagonal offset in reach: the axis orders only
        directions = min(directions, 4)
    dirs = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)][:directions]
    orders = [by_distance]
    for sy, sx in dirs:
        orders.append(
            sorted(by_distance, key=lambda d: (-(sy * d[0] + sx * d[1]), d[0] ** 2 + d[1] ** 2, d))
        )
    return orders


def reference_greedy(pred, truth, order):
    """Pixel by pixel: for each offset, each free predicted pixel takes the free edge at
    `p + d`. Returns the matched masks."""
    height, width = pred.shape
    pred_matched = np.zeros_like(pred, bool)
    truth_matched = np.zeros_like(truth, bool)
    pixels = [tuple(p) for p in np.argwhere(pred)]
    for dy, dx in order:
        for y, x in pixels:
            qy, qx = y + dy, x + dx
            if pred_matched[y, x] or not (0 <= qy < height and 0 <= qx < width):
                continue
            if truth[qy, qx] and not truth_matched[qy, qx]:
                pred_matched[y, x] = truth_matched[qy, qx] = True
    return pred_matched, truth_matched


def maximum_matching(pred, truth, radius):
    p, g = np.argwhere(pred), np.argwhere(truth)
    if len(p) == 0 or len(g) == 0:
        return 0
    d2 = ((p[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    graph = csr_matrix((d2 <= radius * radius + 1e-9).astype(np.int8))
    return int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())


def reference_counts(prob, truth, valid, radius=None, directions=8):
    """Per image and threshold `(tp, fp, fn)`, `[B, 99]` each; with `radius`, tolerant
    (largest greedy matching over the orders)."""
    batch = len(prob)
    tp, fp, fn = (np.zeros((batch, len(THRESHOLDS)), np.int64) for _ in range(3))
    for b in range(batch):
        if not valid[b]:
            continue
        cache = {}
        for k, t in enumerate(THRESHOLDS):
            pred = prob[b] >= t
            key = pred.tobytes()
            if key not in cache:
                if radius is None:
                    matched = int(np.sum(pred & truth[b]))
                else:
                    matched = max(
                        int(reference_greedy(pred, truth[b], order)[0].sum())
                        for order in reference_orders(radius, directions)
                    )
                cache[key] = (matched, int(pred.sum()) - matched, int(truth[b].sum()) - matched)
            tp[b, k], fp[b, k], fn[b, k] = cache[key]
    return tp, fp, fn


def fraction_f(tp, fp, fn):
    tp, fp, fn = int(tp), int(fp), int(fn)
    return Fraction(2 * tp, 2 * tp + fp + fn) if 2 * tp + fp + fn else Fraction(0)


def reference_ois(tp, fp, fn):
    """BSDS's OIS from per-image counts `[B, T]`, ties to the highest threshold."""
    sums = [0, 0, 0]
    for b in range(tp.shape[0]):
        scores = [fraction_f(tp[b, k], fp[b, k], fn[b, k]) for k in range(tp.shape[1])]
        best = max(range(len(scores)), key=lambda k: (scores[k], k))
        for i, x in enumerate((tp, fp, fn)):
            sums[i] += int(x[b, best])
    return float(fraction_f(*sums))


def reference_ap(tp, fp, fn):
    """Walks the thresholds from the highest down, adding `(R_k − R_prev) · P_k`."""
    area, previous = 0.0, 0.0
    for k in reversed(range(len(tp))):
        recall = tp[k] / (tp[k] + fn[k]) if tp[k] + fn[k] else 0.0
        precision = tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else 0.0
        area += (recall - previous) * precision
        previous = recall
    return area


def reference_metrics(tp, fp, fn, suffix=""):
    """Every metric of one matching kind from per-image counts `[B, T]`."""
    t, f_p, f_n = tp.sum(0), fp.sum(0), fn.sum(0)
    h = HALF

    def ratio(a, b):
        return a / b if b else 0.0

    metrics = {
        "precision": ratio(t[h], t[h] + f_p[h]),
        "recall": ratio(t[h], t[h] + f_n[h]),
        "f1": float(fraction_f(t[h], f_p[h], f_n[h])),
        "ods_f": float(max(fraction_f(t[k], f_p[k], f_n[k]) for k in range(len(t)))),
        "ois_f": reference_ois(tp, fp, fn),
        "ap": reference_ap(t, f_p, f_n),
    }
    if not suffix:
        metrics["iou"] = ratio(t[h], t[h] + f_p[h] + f_n[h])
    return {f"{key}{suffix}": value for key, value in metrics.items()}


def run(task, logits, target, valid=None):
    valid = np.ones(len(logits), bool) if valid is None else np.asarray(valid)
    stats = jax.jit(task.metric_stats)(jnp.asarray(logits), jnp.asarray(target), valid)
    stats = {k: np.asarray(v) for k, v in stats.items()}
    return stats, task.compute_metrics(stats)


def random_maps(rng, batch, size, edge_fraction=0.15):
    levels = rng.integers(0, 100, size=(batch, size, size))
    truth = rng.random((batch, size, size)) < edge_fraction
    # Edges tend to score higher, so that the curves are not flat.
    levels = np.where(truth, np.minimum(levels + 30, 99), levels)
    return levels, truth


def raster_line(size, start, end):
    out = np.zeros((size, size), bool)
    (y0, x0), (y1, x1) = start, end
    steps = 4 * max(abs(y1 - y0), abs(x1 - x0), 1)
    t = np.linspace(0, 1, steps + 1)
    out[np.round(y0 + t * (y1 - y0)).astype(int), np.round(x0 + t * (x1 - x0)).astype(int)] = 1
    return out


def shifted(a, dy, dx):
    """`a` moved by `(dy, dx)`, zeros coming in (no wrap-around)."""
    out = np.zeros_like(a)
    h, w = a.shape[-2:]
    src = a[..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    out[..., max(dy, 0) : h - max(-dy, 0), max(dx, 0) : w - max(-dx, 0)] = src
    return out


def confident(pred):
    """Logits for a hard 0/1 prediction: probability 0.995 or 0.005."""
    return quantised(np.where(pred, 99, 0))[1]


# ---- keys, options, offsets -------------------------------------------------------------


def test_keys_and_directions():
    task = Boundary("edge")
    levels, truth = random_maps(np.random.default_rng(0), 2, 28)
    _, metrics = run(task, quantised(levels)[1], truth)
    assert set(metrics) == set(EXACT) | set(TOLERANT)
    assert list(metrics)[:2] == ["f1", "ods_f"]  # the first key is a sweep's default axis
    assert task.metric_directions() == dict.fromkeys(metrics, 1)
    assert task.headline_metrics() == ("f1", "ods_f")  # what sweep tables and Δm% compare
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_rejects_bad_options():
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="'edge': max_dist must be finite and >= 0"):
            Boundary("edge", max_dist=bad)
    with pytest.raises(ValueError, match="'edge': match_directions must be one of"):
        Boundary("edge", match_directions=3)
    assert Boundary("edge", 100, 100).radius == pytest.approx(0.0075 * math.hypot(100, 100))


@pytest.mark.parametrize("radius", [0.0, 0.3, 0.99, 1.0, math.sqrt(2), 1.98, 2.0, 3.5])
def test_tolerance_offsets_are_the_disc_nearest_first(radius):
    assert list(tolerance_offsets(radius)) == offsets_within(radius)
    orders = [list(order) for order in match_orders(radius)]
    expected = []
    for order in reference_orders(radius):
        if order not in expected:
            expected.append(order)
    assert orders == expected
    assert all(sorted(order) == sorted(offsets_within(radius)) for order in orders)


def test_match_orders_counts():
    assert match_orders(0.5) == (((0, 0),),)  # below 1 px: the pixel itself, one order
    assert len(match_orders(1.0, 0)) == 1
    assert len(match_orders(1.0, 4)) == len(match_orders(1.0, 8)) == 5  # no diagonal in reach
    assert len(match_orders(math.sqrt(2), 8)) == 9
    assert len(match_orders(2.0, 4)) == 5


# ---- hand-built maps --------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 100])
def test_perfect_prediction_scores_one(size):
    truth = raster_line(size, (2, 3), (size - 3, size - 10))[None]
    _, metrics = run(Boundary("edge", size, size), confident(truth), truth)
    assert metrics == dict.fromkeys(metrics, 1.0)


def test_tall_map_every_pixel_an_edge():
    # 300 rows: the tolerant counts are summed in byte lanes over chunks of <= 255 rows.
    task = Boundary("edge", 300, 4)
    assert task.radius >= 1
    truth = np.ones((2, 300, 4), bool)
    stats, metrics = run(task, confident(truth), truth)
    assert stats["tol_tp"].tolist() == [2 * 300 * 4] * 99
    assert metrics == dict.fromkeys(metrics, 1.0)


def test_shifted_vertical_line_tolerance():
    # A 100×100 map: the default radius is 0.0075·√(2)·100 ≈ 1.06 px >= 1.
    truth = np.zeros((1, 100, 100), bool)
    truth[0, 10:90, 50] = True
    pred = shifted(truth, 0, 1)
    _, metrics = run(Boundary("edge", 100, 100), confident(pred), truth)
    for key in EXACT:
        assert metrics[key] == 0.0, key
    for key in TOLERANT:
        assert metrics[key] == 1.0, key
    # Radius 0.005·141 ≈ 0.71 px < 1: the tolerant scores are the exact ones.
    _, metrics = run(Boundary("edge", 100, 100, max_dist=0.005), confident(pred), truth)
    assert metrics == dict.fromkeys(metrics, 0.0)


def test_shifted_diagonal_line_needs_the_directional_orders():
    # A rasterised line runs along rows; its copy shifted by one column overlaps each run
    # but one pixel. Greedy by distance makes those exact pairs first and leaves each
    # run's ends unmatched; the order along the shift matches everything.
    truth = raster_line(100, (10, 5), (40, 95))[None]
    pred = shifted(truth, 0, 1)
    radius = 0.0075 * math.hypot(100, 100)
    assert maximum_matching(pred[0], truth[0], radius) == truth.sum()
    _, metrics = run(Boundary("edge", 100, 100), confident(pred), truth)
    assert metrics["f1_tol"] == 1.0 and metrics["ods_f_tol"] == 1.0
    assert metrics["f1"] < 0.8  # most pixels coincide, the run ends do not
    _, plain = run(Boundary("edge", 100, 100, match_directions=0), confident(pred), truth)
    assert metrics["f1"] < plain["f1_tol"] < 1.0


def test_empty_prediction_and_empty_maps_score_zero():
    truth = np.zeros((1, 100, 100), bool)
    truth[0, 20, 10:60] = True
    nothing = confident(np.zeros_like(truth))
    for target in (truth, np.zeros_like(truth)):
        stats, metrics = run(Boundary("edge", 100, 100), nothing, target)
        assert metrics == dict.fromkeys(metrics, 0.0)
        assert stats["tp"].sum() == stats["fp"].sum() == 0
        assert stats["fn"].tolist() == [int(target.sum())] * 99


def test_one_to_one_matching():
    truth = np.zeros((1, 100, 100), bool)
    truth[0, 50, 50] = True
    pred = np.zeros_like(truth)
    pred[0, 50, 49] = pred[0, 50, 51] = True  # both 1 px from the one edge pixel
    _, metrics = run(Boundary("edge", 100, 100), confident(pred), truth)
    assert metrics["precision_tol"] == 0.5 and metrics["recall_tol"] == 1.0
    assert metrics["f1_tol"] == pytest.approx(2 / 3)
    assert metrics["precision"] == metrics["recall"] == 0.0
    # And the other way round: two edge pixels, one prediction between them.
    _, metrics = run(Boundary("edge", 100, 100), confident(truth), pred)
    assert metrics["precision_tol"] == 1.0 and metrics["recall_tol"] == 0.5


# ---- counts and metrics against references ----------------------------------------------


def test_exact_counts_and_metrics_against_numpy():
    rng = np.random.default_rng(1)
    levels, truth = random_maps(rng, 5, 28)
    prob, logits = quantised(levels)
    stats, metrics = run(Boundary("edge"), logits, truth)
    for k, t in enumerate(THRESHOLDS):
        predicted = prob >= t
        assert stats["tp"][k] == np.sum(predicted & truth)
        assert stats["fp"][k] == np.sum(predicted & ~truth)
        assert stats["fn"][k] == np.sum(~predicted & truth)
    at_half = prob >= 0.5
    tp, fp, fn = (np.sum(at_half & truth), np.sum(at_half & ~truth), np.sum(~at_half & truth))
    assert metrics["precision"] == pytest.approx(tp / (tp + fp), abs=1e-12)
    assert metrics["recall"] == pytest.approx(tp / (tp + fn), abs=1e-12)
    assert metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert metrics["iou"] == pytest.approx(tp / (tp + fp + fn), abs=1e-12)
    expected = reference_metrics(*reference_counts(prob, truth, np.ones(5, bool)))
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key


def test_ap_is_sklearn_average_precision_on_the_grid():
    rng = np.random.default_rng(2)
    levels, truth = random_maps(rng, 4, 28)
    levels = np.maximum(levels, 1)  # every score on the grid: the two curves coincide
    prob, logits = quantised(levels)
    _, metrics = run(Boundary("edge"), logits, truth)
    expected = average_precision_score(truth.ravel(), prob.ravel())
    assert metrics["ap"] == pytest.approx(expected, abs=1e-12)
    assert metrics["ap_tol"] == metrics["ap"]  # 28×28: radius < 1
    # A hand case: 2 edges; t_1 finds both with 2 false positives, t_2 one edge alone.
    assert average_precision(np.array([2, 1]), np.array([2, 0]), np.array([0, 1])) == 0.75


def test_ois_against_a_per_image_loop():
    rng = np.random.default_rng(3)
    levels, truth = random_maps(rng, 6, 28)
    truth[3] = False  # no edges, probabilities below 0.5: the best threshold predicts none
    levels[3] = np.minimum(levels[3], 49)
    truth[4] = False  # no edges, a few pixels at 0.995: false positives at every threshold
    levels[4] = np.where(rng.random((28, 28)) < 0.02, 99, 0)
    valid = np.array([True, True, True, True, True, False])
    prob, logits = quantised(levels)
    stats, metrics = run(Boundary("edge"), logits, truth, valid)
    tp, fp, fn = reference_counts(prob, truth, valid)
    assert metrics["ois_f"] == pytest.approx(reference_ois(tp, fp, fn), abs=1e-12)
    assert int(stats["ois_fp"]) >= int(np.sum(levels[4] == 99))  # image 4's best: t = 0.99
    # OIS differs from ODS here: each image picks its own threshold.
    assert metrics["ois_f"] > metrics["ods_f"]


def test_image_without_edges_or_predictions_counts_for_nothing():
    rng = np.random.default_rng(4)
    levels, truth = random_maps(rng, 3, 28)
    _, logits = quantised(levels)
    stats, metrics = run(Boundary("edge"), logits, truth)
    blank = np.concatenate([logits, confident(np.zeros((1, 28, 28), bool))])
    blank_truth = np.concatenate([truth, np.zeros((1, 28, 28), bool)])
    stats_blank, metrics_blank = run(Boundary("edge"), blank, blank_truth)
    assert {k: v.tolist() for k, v in stats.items()} == {
        k: v.tolist() for k, v in stats_blank.items()
    }
    assert metrics == metrics_blank
    # Without edges but with predictions at probability 0.305 (level 30), only the OIS
    # sums ignore it: its best threshold, 0.99, predicts nothing.
    low = np.concatenate([logits, quantised(np.full((1, 28, 28), 30))[1]])
    stats_low, metrics_low = run(Boundary("edge"), low, blank_truth)
    assert metrics_low["ois_f"] == metrics["ois_f"]
    assert stats_low["fp"][0] == stats["fp"][0] + 28 * 28
    assert metrics_low["ods_f"] <= metrics["ods_f"]


def test_tolerant_counts_and_metrics_against_references():
    # 12×12 maps, radius 0.1·√288 ≈ 1.70 px: the 9 offsets of |d| <= √2.
    rng = np.random.default_rng(5)
    task = Boundary("edge", 12, 12, max_dist=0.1)
    levels = rng.choice([0, 20, 45, 60, 80, 99], size=(4, 12, 12), p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    truth = rng.random((4, 12, 12)) < 0.2
    truth[2] = False  # an image without edges
    valid = np.array([True, True, True, False])
    prob, logits = quantised(levels)
    stats, metrics = run(task, logits, truth, valid)
    tp, fp, fn = reference_counts(prob, truth, valid, radius=task.radius)
    np.testing.assert_array_equal(stats["tol_tp"], tp.sum(0))
    np.testing.assert_array_equal(stats["tol_fp"], fp.sum(0))
    np.testing.assert_array_equal(stats["tol_fn"], fn.sum(0))
    for key, value in reference_metrics(tp, fp, fn, "_tol").items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    exact = reference_counts(prob, truth, valid)
    for key, value in reference_metrics(*exact).items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert metrics["ods_f_tol"] > metrics["ods_f"]
    assert np.all(stats["tol_tp"] >= stats["tp"])  # the exact pairs are made first
    # One order only (match_directions=0) is the plain greedy by distance.
    _, plain = run(Boundary("edge", 12, 12, max_dist=0.1, match_directions=0), logits, truth, valid)
    plain_counts = reference_counts(prob, truth, valid, radius=task.radius, directions=0)
    for key, value in reference_metrics(*plain_counts, "_tol").items():
        assert plain[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize(("size", "max_dist"), [(28, 0.0075), (100, 0.005)])
def test_tolerant_equals_exact_below_one_pixel(size, max_dist):
    task = Boundary("edge", size, size, max_dist=max_dist)
    assert task.radius < 1
    levels, truth = random_maps(np.random.default_rng(6), 2, size)
    stats, metrics = run(task, quantised(levels)[1], truth)
    for key in TOLERANT:
        assert metrics[key] == metrics[key[: -len("_tol")]], key
    for key in ("tp", "fp", "fn"):
        np.testing.assert_array_equal(stats[f"tol_{key}"], stats[key])


# ---- additivity, padding, jit -----------------------------------------------------------


TASKS = [Boundary("edge"), Boundary("edge", 20, 20, max_dist=0.1)]


@pytest.mark.parametrize("task", TASKS, ids=["exact_radius", "radius_2px"])
def test_batches_add_up(task):
    levels, truth = random_maps(np.random.default_rng(7), 6, task.height)
    _, logits = quantised(levels)
    whole, metrics = run(task, logits, truth)
    parts = [run(task, logits[a:b], truth[a:b])[0] for a, b in ((0, 2), (2, 3), (3, 6))]
    summed = {k: sum(p[k].astype(np.int64) for p in parts) for k in whole}
    assert {k: v.tolist() for k, v in summed.items()} == {k: v.tolist() for k, v in whole.items()}
    assert task.compute_metrics(summed) == metrics


@pytest.mark.parametrize("task", TASKS, ids=["exact_radius", "radius_2px"])
def test_invalid_examples_count_for_nothing(task):
    levels, truth = random_maps(np.random.default_rng(8), 5, task.height)
    _, logits = quantised(levels)
    valid = np.array([True, False, True, False, True])
    padded, _ = run(task, logits, truth, valid)
    kept, _ = run(task, logits[valid], truth[valid])
    assert {k: v.tolist() for k, v in padded.items()} == {k: v.tolist() for k, v in kept.items()}
    nothing, metrics = run(task, logits, truth, np.zeros(5, bool))
    assert all(v.sum() == 0 for v in nothing.values())
    assert metrics == dict.fromkeys(metrics, 0.0)


@pytest.mark.parametrize("task", TASKS, ids=["exact_radius", "radius_2px"])
def test_jit_equals_eager(task):
    levels, truth = random_maps(np.random.default_rng(9), 3, task.height)
    args = (jnp.asarray(quantised(levels)[1]), jnp.asarray(truth), jnp.ones(3, bool))
    eager = task.metric_stats(*args)
    jitted = jax.jit(task.metric_stats)(*args)
    assert jax.tree.map(lambda a: a.tolist(), eager) == jax.tree.map(lambda a: a.tolist(), jitted)
    assert all(v.dtype == jnp.int32 for v in jitted.values())


# ---- the greedy matching ----------------------------------------------------------------


def test_greedy_match_equals_the_pixel_by_pixel_definition():
    rng = np.random.default_rng(10)
    for radius in (1.0, 1.5, 2.5):
        for order in match_orders(radius):
            pred = rng.random((3, 15, 17)) < 0.2
            truth = rng.random((3, 15, 17)) < 0.2
            got = greedy_match(jnp.asarray(pred), jnp.asarray(truth), order)
            for b in range(3):
                want = reference_greedy(pred[b], truth[b], order)
                np.testing.assert_array_equal(np.asarray(got[0][b]), want[0])
                np.testing.assert_array_equal(np.asarray(got[1][b]), want[1])


def test_greedy_match_on_bit_planes_matches_each_bit_alone():
    rng = np.random.default_rng(11)
    pred = rng.random((32, 2, 10, 10)) < 0.25
    truth = rng.random((32, 2, 10, 10)) < 0.25
    weights = (np.uint32(1) << np.arange(32, dtype=np.uint32))[:, None, None, None]
    pack = lambda bits: jnp.asarray(np.sum(bits * weights, axis=0, dtype=np.uint32))  # noqa: E731
    order = match_orders(2.0)[3]
    got_pred, got_truth = greedy_match(pack(pred), pack(truth), order)
    bool_pred, bool_truth = greedy_match(jnp.asarray(pred), jnp.asarray(truth), order)
    assert np.array_equal(np.asarray(got_pred), np.asarray(pack(np.asarray(bool_pred))))
    assert np.array_equal(np.asarray(got_truth), np.asarray(pack(np.asarray(bool_truth))))


def _best_of_orders(pred, truth, radius):
    counts = [
        np.asarray(greedy_match(jnp.asarray(pred), jnp.asarray(truth), order)[0]).sum((-2, -1))
        for order in match_orders(radius)
    ]
    return np.max(counts, axis=0)


def _circles(rng, count, size):
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((count, size, size), bool)
    for i in range(count):
        cy, cx = rng.uniform(0, size, 2)
        out[i] = np.abs(np.hypot(yy - cy, xx - cx) - rng.uniform(4, size / 2)) < 0.5
    return out


def _gap_maps(kind, radius, density, rng, count=40, size=32):
    if kind == "noise":
        return rng.random((2, count, size, size)) < density
    if kind == "lines":
        truth = np.stack([raster_line(size, *rng.integers(0, size, (2, 2))) for _ in range(count)])
    else:
        truth = _circles(rng, count, size)
    moves = rng.integers(-int(radius), int(radius) + 1, (count, 2))  # shifts within reach
    return np.stack([shifted(truth[i], *moves[i]) for i in range(count)]), truth


# name: (kind, radius, noise density, (sum bound, worst-map bound)). Observed with seed
# 12, the ratio of greedy pairs (best of `match_orders`) to maximum pairs, summed over
# the 40 maps / worst map, and the plain greedy by distance's:
#   noise 5% r=1: 1.000 / 1.000 (plain 0.993 / 0.900); noise 15% r=1.5: 0.953 / 0.908
#   (0.931 / 0.885); noise 15% r=3: 0.898 / 0.860 (0.879 / 0.821); noise 30% r=2:
#   0.884 / 0.856 (0.870 / 0.827); shifted lines r=1: 1.000 / 1.000 (0.799 / 0.524);
#   lines r=3: 0.988 / 0.875 (0.848 / 0.500); shifted circles r=1: 0.998 / 0.969
#   (0.909 / 0.700); circles r=3: 0.978 / 0.893 (0.910 / 0.778).
GAP_CASES = {
    "noise 5%, r=1": ("noise", 1.0, 0.05, (0.99, 0.95)),
    "noise 15%, r=1.5": ("noise", 1.5, 0.15, (0.94, 0.89)),
    "noise 15%, r=3": ("noise", 3.0, 0.15, (0.88, 0.84)),
    "noise 30%, r=2": ("noise", 2.0, 0.30, (0.87, 0.84)),
    "shifted lines, r=1": ("lines", 1.0, None, (0.99, 0.95)),
    "shifted lines, r=3": ("lines", 3.0, None, (0.98, 0.85)),
    "shifted circles, r=1": ("circles", 1.0, None, (0.99, 0.95)),
    "shifted circles, r=3": ("circles", 3.0, None, (0.97, 0.88)),
}


@pytest.mark.parametrize("name", list(GAP_CASES))
def test_greedy_against_maximum_bipartite_matching(name):
    kind, radius, density, (sum_bound, map_bound) = GAP_CASES[name]
    pred, truth = _gap_maps(kind, radius, density, np.random.default_rng(12))
    count = len(pred)
    greedy = _best_of_orders(pred, truth, radius)
    best = np.array([maximum_matching(pred[i], truth[i], radius) for i in range(count)])
    assert np.all(greedy <= best)
    assert np.all(2 * greedy >= best)  # any maximal matching
    ratio = greedy[best > 0] / best[best > 0]
    assert greedy.sum() / best.sum() >= sum_bound, (greedy.sum() / best.sum(), ratio.min())
    assert ratio.min() >= map_bound, ratio.min()
    # Every single order is maximal: no free predicted pixel has a free edge in reach,
    # hence at least half the maximum.
    for order in match_orders(radius):
        pm, tm = (np.asarray(x) for x in greedy_match(jnp.asarray(pred), jnp.asarray(truth), order))
        assert np.all(2 * pm.sum((1, 2)) >= best)
        for i in range(0, count, 8):
            free_p, free_t = np.argwhere(pred[i] & ~pm[i]), np.argwhere(truth[i] & ~tm[i])
            if len(free_p) and len(free_t):
                d2 = ((free_p[:, None] - free_t[None]) ** 2).sum(-1)
                assert d2.min() > radius * radius
