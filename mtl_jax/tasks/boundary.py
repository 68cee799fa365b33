"""Boundary (edge) detection: per-pixel edge probabilities and their BSDS-style scores.

The scores follow the BSDS benchmark (Martin, Fowlkes & Malik, TPAMI 2004; Arbelaez et
al., TPAMI 2011, Sec. 3.1, the `boundaryBench` / `collect_eval_bdry.m` code) with two
kinds of matching between predicted and ground-truth edge pixels: exact (a predicted
pixel is correct only on a ground-truth pixel) and tolerant (one-to-one matching within a
distance: `match_orders`, `greedy_match`). `Boundary` documents every key.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mtl_jax import losses
from mtl_jax.tasks.base import HIGHER_IS_BETTER, Task, check_binary, f1_score, ratio

# Thresholds at which the F-measures and the precision/recall curve are evaluated:
# probabilities 0.01, 0.02, ..., 0.99, BSDS's default grid (nthresh = 99); a pixel is
# predicted at threshold t where its probability is >= t.
_EDGE_THRESHOLDS = np.linspace(0.01, 0.99, 99, dtype=np.float32)
_AT_HALF = int(np.argmin(np.abs(_EDGE_THRESHOLDS - 0.5)))
# Tolerant matching packs the 99 thresholds of a pixel into the bits of 4 uint32 words.
_WORD_BITS = 32
_WORDS = -(-len(_EDGE_THRESHOLDS) // _WORD_BITS)


def tolerance_offsets(radius: float) -> tuple[tuple[int, int], ...]:
    """Integer offsets `(dy, dx)` with `dy² + dx² <= radius²`, by increasing `dy² + dx²`,
    ties by increasing `(dy, dx)`: the first order of `match_orders`.

    The distance test is BSDS's (`match.cc`: `d2 > maxDist²` is out). `(0, 0)` always
    comes first.

    Examples:
      >>> tolerance_offsets(0.3)
      ((0, 0),)
      >>> tolerance_offsets(1.0)
      ((0, 0), (-1, 0), (0, -1), (0, 1), (1, 0))
    """
    if not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be finite and >= 0, got {radius!r}")
    reach = math.floor(radius)
    offsets = [
        (dy, dx)
        for dy in range(-reach, reach + 1)
        for dx in range(-reach, reach + 1)
        if dy * dy + dx * dx <= radius * radius
    ]
    return tuple(sorted(offsets, key=lambda d: (d[0] ** 2 + d[1] ** 2, d)))


# Directions `(sy, sx)` of the directional orders of `match_orders`: the axes, then the
# diagonals.
_DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))
MATCH_DIRECTIONS = (0, 4, 8)


def match_orders(radius: float, directions: int = 8) -> tuple[tuple[tuple[int, int], ...], ...]:
    """The offset orders whose greedy matchings `Boundary` compares (distinct ones only).

    The first is `tolerance_offsets(radius)` (by increasing distance); then, for each of
    the first `directions` of the 8 directions `s` (the 4 axes, then the 4 diagonals), the
    same offsets sorted by decreasing `s · d`, then increasing distance, then `(dy, dx)`.
    The diagonals count only from `radius >= √2` on: below, no diagonal offset is within
    reach and their orders would only re-break the axis orders' ties.

    Why several orders: greedy by distance matches coinciding pixels first, which is
    wrong for a shifted edge. Where a rasterised line runs along a row, its copy shifted
    by one pixel along that row coincides with all of the run but one pixel; once those
    pairs are made, the two ends of the run are left over, too far apart to match. The
    order along the shift matches the whole run.

    Examples:
      >>> len(match_orders(0.3)), len(match_orders(1.0, 0)), len(match_orders(1.0))
      (1, 1, 5)
      >>> len(match_orders(1.5, 4)), len(match_orders(1.5))
      (5, 9)
      >>> match_orders(1.0, 4)[1]  # along +x first: d = (0, 1), then s · d = 0, then -x
      ((0, 1), (0, 0), (-1, 0), (1, 0), (0, -1))
    """
    if directions not in MATCH_DIRECTIONS:
        raise ValueError(f"directions must be one of {MATCH_DIRECTIONS}, got {directions!r}")
    by_distance = tolerance_offsets(radius)
    orders = [by_distance]
    if radius * radius < 2:
        directions = min(directions, 4)
    for sy, sx in _DIRECTIONS[:directions]:

        def key(d, sy=sy, sx=sx):
            return (-(sy * d[0] + sx * d[1]), d[0] ** 2 + d[1] ** 2, d)

        orders.append(tuple(sorted(by_distance, key=key)))
    return tuple(dict.fromkeys(orders))


def greedy_match(
    pred: jax.Array, truth: jax.Array, offsets: tuple[tuple[int, int], ...]
) -> tuple[jax.Array, jax.Array]:
    """One-to-one matching of predicted and ground-truth edge pixels, greedy over offsets.

    For each offset `d` of `offsets` in turn (see `tolerance_offsets`), every predicted
    pixel `p` still unmatched is matched to the ground-truth pixel `p + d` if that one is
    an edge still unmatched. Within one offset, `p -> p + d` is a bijection, so the
    matches of that offset never compete for a pixel and are made all at once; the
    result is a one-to-one matching that is maximal (no unmatched predicted pixel has an
    unmatched ground-truth pixel within the offsets). A maximal matching has at least
    half as many pairs as a maximum one (BSDS's min-cost assignment, CSA, finds a
    maximum one); `Boundary` takes the best of several orders (`match_orders`).

    Runs in `len(offsets)` passes of a `lax.fori_loop` (compile time independent of
    the number of offsets), each a few element-wise operations on the maps.

    Args:
      pred: `[..., H, W]` predicted edges: bool, or unsigned integers whose bits are
        independent maps (bit-planes, matched bit by bit: e.g. one bit per threshold).
      truth: ground-truth edges, same shape and dtype as `pred`.
      offsets: static `(dy, dx)` pairs, in the order they are tried.

    Returns:
      `(pred_matched, truth_matched)`, like `pred` and `truth`: the pixels (bits) of each
      that have a partner. Both have the same number of set pixels (bits).

    Examples:
      >>> import jax.numpy as jnp
      >>> truth = jnp.array([[False, True, False]])
      >>> pred = jnp.array([[True, False, True]])  # both 1 px from the one edge pixel
      >>> pred_matched, truth_matched = greedy_match(pred, truth, tolerance_offsets(1.0))
      >>> pred_matched.tolist(), truth_matched.tolist()  # one-to-one: one of them matches
      ([[False, False, True]], [[False, True, False]])
    """
    if pred.shape != truth.shape or pred.dtype != truth.dtype:
        raise ValueError(
            f"pred and truth must have the same shape and dtype, got {pred.shape} {pred.dtype} "
            f"and {truth.shape} {truth.dtype}"
        )
    if not offsets:
        return jnp.zeros_like(pred), jnp.zeros_like(truth)
    height, width = pred.shape[-2:]
    lead = pred.shape[:-2]
    reach = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    # The ground truth lives in a zero-padded frame, so that a shifted window never
    # leaves it; padding pixels are never edges, so nothing matches outside the map.
    padded = jnp.pad(truth, [(0, 0)] * len(lead) + [(reach, reach), (reach, reach)])
    table = jnp.asarray(offsets, jnp.int32)
    zeros = (0,) * len(lead)

    def one_offset(i, carry):
        pred_free, truth_free = carry
        start = (*zeros, reach + table[i, 0], reach + table[i, 1])
        window = lax.dynamic_slice(truth_free, start, (*lead, height, width))  # truth at p + d
        pairs = pred_free & window
        return pred_free & ~pairs, lax.dynamic_update_slice(truth_free, window & ~pairs, start)

    pred_free, truth_free = lax.fori_loop(0, len(offsets), one_offset, (pred, padded))
    truth_free = truth_free[..., reach : reach + height, reach : reach + width]
    return pred & ~pred_free, truth & ~truth_free


def _counts_above(levels: jax.Array, weight: jax.Array) -> jax.Array:
    """`[T, B]`: per image, the summed `weight` of the pixels predicted at each threshold.

    `levels` `[B, H, W]` counts the thresholds a pixel's probability reaches, so the
    pixel is predicted at threshold `k` (0-based) iff `levels > k`: a per-image histogram
    of the levels, summed from the top, gives every threshold in one pass over the pixels.
    """
    batch = levels.shape[0]
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None, None], levels.shape)
    hist = jnp.zeros((batch, len(_EDGE_THRESHOLDS) + 1), jnp.int32)
    hist = hist.at[rows, levels].add(weight.astype(jnp.int32))
    above = jnp.flip(jnp.cumsum(jnp.flip(hist, axis=1), axis=1), axis=1)  # Σ_{l >= k}
    return above[:, 1:].T


def _threshold_bits(levels: jax.Array) -> jax.Array:
    """`[WORDS, B, H, W]` uint32: bit `k % 32` of word `k // 32` is set iff the pixel is
    predicted at threshold `k`, i.e. the `levels` lowest bits."""
    word = jnp.arange(_WORDS, dtype=jnp.int32)[:, None, None, None]
    n = jnp.clip(levels[None] - _WORD_BITS * word, 0, _WORD_BITS).astype(jnp.uint32)
    low_bits = (jnp.uint32(1) << jnp.minimum(n, _WORD_BITS - 1)) - 1
    return jnp.where(n == _WORD_BITS, jnp.uint32(0xFFFFFFFF), low_bits)


def _bit_counts(words: jax.Array) -> jax.Array:
    """`[T, B]`: per image, the pixels whose bit of threshold `k` is set in `words`
    (`[WORDS, B, H, W]` uint32).

    Counting bit by bit would take 99 passes over the words. Instead, bit `r` of each of
    the 4 bytes of a word is masked out at once (`0x01010101 << r`) and summed over up
    to 255 rows, which no byte can overflow: 8 passes, then the 4 byte lanes are split.
    """
    n_words, batch, height, width = words.shape
    chunks = -(-height // 255)
    rows = -(-height // chunks)  # rows per chunk, <= 255
    words = jnp.pad(words, ((0, 0), (0, 0), (0, chunks * rows - height), (0, 0)))
    words = words.reshape(n_words, batch, chunks, rows, width)
    per_shift = []
    for r in range(8):
        sums = jnp.sum((words >> r) & jnp.uint32(0x01010101), axis=3, dtype=jnp.uint32)
        lanes = jnp.stack([(sums >> (8 * i)) & 0xFF for i in range(4)], axis=-1)
        per_shift.append(jnp.sum(lanes.astype(jnp.int32), axis=(2, 3)))  # bits 8i + r
    counts = jnp.stack(per_shift, axis=-1)  # [WORDS, B, byte i, shift r]: bit 32w + 8i + r
    counts = jnp.transpose(counts, (0, 2, 3, 1)).reshape(n_words * _WORD_BITS, batch)
    return counts[: len(_EDGE_THRESHOLDS)]


def _image_scale_sums(tp: jax.Array, fp: jax.Array, fn: jax.Array) -> dict[str, jax.Array]:
    """Sums over images of `tp`, `fp`, `fn` (`[T, B]`) at each image's best threshold.

    The best threshold of an image maximises its `F = 2tp / (2tp + fp + fn)` (0 when the
    image has nothing to score); among equal F the highest threshold (fewest predicted
    pixels) wins, so an image without ground-truth edges adds the fewest false positives
    any threshold gives it, and nothing if some threshold predicts none of its pixels.
    """
    denominator = 2 * tp + fp + fn
    f = jnp.where(denominator > 0, 2 * tp / jnp.maximum(denominator, 1), 0.0)
    last = tp.shape[0] - 1
    best = last - jnp.argmax(f[::-1], axis=0)  # argmax takes the first: the highest t

    def at_best(x):
        return jnp.sum(jnp.take_along_axis(x, best[None], axis=0))

    return {"tp": at_best(tp), "fp": at_best(fp), "fn": at_best(fn)}


def average_precision(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """Step-wise area under the precision/recall curve of counts at increasing thresholds.

    `AP = Σ_k (R_k − R_{k+1}) P_k` over the thresholds `t_1 < ... < t_K`, with
    `R_{K+1} = 0` (a threshold above the last predicts nothing), `R_k = tp_k / (tp_k +
    fn_k)` and `P_k = tp_k / (tp_k + fp_k)` (0 without predictions). This is scikit-learn's
    `average_precision_score` restricted to the thresholds, and equals it when every
    score lies on the grid; BSDS's `Area_PR` instead averages the linearly interpolated
    precision at recalls 0, 0.01, ..., 1.

    Examples:
      >>> import numpy as np
      >>> # 2 edges; at t_1 both found with 2 false positives, at t_2 one found alone.
      >>> average_precision(np.array([2, 1]), np.array([2, 0]), np.array([0, 1]))
      0.75
    """
    recall = ratio(tp, np.asarray(tp) + np.asarray(fn))
    precision = ratio(tp, np.asarray(tp) + np.asarray(fp))
    return float(np.sum((recall - np.append(recall[1:], 0.0)) * precision))


def _scores(stats: dict[str, np.ndarray], prefix: str, suffix: str) -> dict[str, float]:
    tp, fp, fn = (np.asarray(stats[f"{prefix}{k}"], np.float64) for k in ("tp", "fp", "fn"))
    ois = (stats[f"ois_{prefix}{k}"] for k in ("tp", "fp", "fn"))
    f1 = f1_score(tp, fp, fn)
    h = _AT_HALF
    scores = {
        "f1": float(f1[h]),
        "ods_f": float(np.max(f1)),
        "ois_f": float(f1_score(*(np.float64(x) for x in ois))),
        "ap": average_precision(tp, fp, fn),
        "precision": float(ratio(tp[h], tp[h] + fp[h])),
        "recall": float(ratio(tp[h], tp[h] + fn[h])),
    }
    if not suffix:
        scores["iou"] = float(ratio(tp[h], tp[h] + fp[h] + fn[h]))
    return {f"{key}{suffix}": value for key, value in scores.items()}


@dataclasses.dataclass(frozen=True)
class Boundary(Task):
    """Boundary / edge detection: a per-pixel edge probability map.

    Loss: class-balanced per-pixel BCE (HED, Xie & Tu 2015). Targets are `[H, W]` maps in
    {0, 1}. A pixel is predicted as an edge at threshold `t` where its probability
    (sigmoid of the logit) is `>= t`, for the 99 thresholds 0.01, ..., 0.99 (BSDS's grid).

    Metrics, fractions in [0, 1], from counts accumulated over the whole split (every
    valid image, every batch, every device). Each is 0 where it has nothing to score
    (e.g. precision without predictions, F without predictions nor edges).

    Exact pixel matching (a predicted pixel is correct iff it is a ground-truth edge;
    true positives tp, false positives fp, false negatives fn), no suffix:

    * `precision`, `recall`, `f1`, `iou` at probability 0.5: `tp / (tp + fp)`,
      `tp / (tp + fn)`, `2tp / (2tp + fp + fn)`, `tp / (tp + fp + fn)`.
    * `ods_f` (optimal dataset scale): the best F over the thresholds, one threshold for
      the whole split, F computed from the split's summed counts at each threshold
      (BSDS's `maxF` also interpolates R and P linearly between neighbouring
      thresholds; no interpolation here).
    * `ois_f` (optimal image scale), as `collect_eval_bdry.m` computes its `F_max`: each
      image takes the threshold with its own best F (ties: the highest threshold, where
      BSDS takes the lowest; only ties with different counts differ, mostly images whose
      F is 0 at every threshold, for which ours adds the fewest false positives); its
      tp, fp and fn at that threshold are summed over images; OIS-F is the F of these
      sums, without interpolation. An image without edges has F = 0 everywhere, so it
      adds its false positives at the highest threshold: nothing if none of its
      probabilities reaches 0.99.
    * `ap`: the step-wise area under the split's precision/recall curve over the 99
      thresholds, `average_precision` (scikit-learn's definition, not BSDS's
      interpolated `Area_PR`).

    Tolerant matching (BSDS-style), suffix `_tol`: a predicted edge pixel and a
    ground-truth edge pixel may match when their distance is at most `radius = max_dist ×
    √(H² + W²)` pixels, one-to-one. tp is the number of matched pairs (as many predicted
    as ground-truth pixels), fp the unmatched predicted pixels, fn the unmatched
    ground-truth pixels; `precision_tol`, `recall_tol`, `f1_tol` (at 0.5), `ods_f_tol`,
    `ois_f_tol` and `ap_tol` are defined from these counts exactly as above. The
    matching, per image and threshold, is the largest of the greedy matchings
    (`greedy_match`) of the `match_orders(radius, match_directions)` offset orders: by
    increasing distance, and along each of `match_directions` directions. BSDS
    (`correspondPixels`) solves a min-cost assignment (CSA) that finds a maximum
    matching; each greedy matching is maximal, hence has at least half as many pairs.
    On the random maps of `tests/test_boundary_metrics.py` (scipy's maximum matching
    as the reference) the best of the orders has 99.8-100% of the maximum pairs for
    lines and circles shifted by up to the radius at radius 1 and 98-99% at radius 3,
    and 88-100% for random noise (less for denser noise and larger radii); the order
    by distance alone has 80-91% on the shifted maps, 50% on the worst one. So the
    tolerant tp is at most, and usually within a few percent of, a maximum matching's
    on the same maps. Unlike BSDS, predictions are not thinned to one-pixel-wide edges
    first, and each image has one ground-truth map.

    When the radius is under 1 pixel, only the pixel itself is within reach and the
    tolerant scores equal the exact ones: so for 28×28 maps at the default `max_dist`
    (0.0075 × 39.6 ≈ 0.30 px). The tolerance matters from 95×95 pixels on (radius >= 1).

    Cost: the exact counts take one pass over the pixels. With a radius of 1 pixel or
    more, tolerant matching adds about `len(match_orders(...)) × len(offsets)` passes of
    a few bitwise operations over `[4, B, H, W]` uint32 words (the 99 thresholds of a
    pixel packed into bits); `match_directions=0` keeps one order.

    Attributes:
      height, width: the map's size.
      max_dist: the matching tolerance, a fraction of the image diagonal (BSDS's
        `maxDist`, 0.0075 by default), keyword-only.
      match_directions: 0, 4 or 8 directional greedy orders tried besides the order by
        distance (`match_orders`: the diagonals only from a radius of √2), keyword-only.

    Examples:
      >>> import jax.numpy as jnp
      >>> task = Boundary("edge", height=1, width=4)
      >>> target = jnp.array([[[1, 1, 0, 0]]])
      >>> logits = jnp.array([[[2.0], [-0.5], [-3.0], [-3.0]]])  # p = 0.88, 0.38, 0.05, 0.05
      >>> m = task.compute_metrics(task.metric_stats(logits, target, jnp.array([True])))
      >>> round(m["f1"], 4), m["ods_f"], m["ap"], m["precision"], m["recall"]
      (0.6667, 1.0, 1.0, 1.0, 0.5)
    """

    height: int = 28
    width: int = 28
    max_dist: float = dataclasses.field(default=0.0075, kw_only=True)
    match_directions: int = dataclasses.field(default=8, kw_only=True)

    dense: ClassVar[bool] = True

    def __post_init__(self):
        if not (math.isfinite(self.max_dist) and self.max_dist >= 0):
            raise ValueError(
                f"task {self.name!r}: max_dist must be finite and >= 0, got {self.max_dist!r}"
            )
        if self.match_directions not in MATCH_DIRECTIONS:
            raise ValueError(
                f"task {self.name!r}: match_directions must be one of {MATCH_DIRECTIONS}, "
                f"got {self.match_directions!r}"
            )

    @property
    def output_shape(self):
        return (self.height, self.width, 1)

    @property
    def target_shape(self):
        return (self.height, self.width)

    @property
    def radius(self) -> float:
        """The matching tolerance in pixels: `max_dist × √(H² + W²)`."""
        return self.max_dist * math.hypot(self.height, self.width)

    def loss(self, pred, target, valid):
        mask = jnp.broadcast_to(valid[:, None, None], target.shape)
        return losses.class_balanced_bce(pred[..., 0], target, mask), mask

    def metric_stats(self, pred, target, valid):
        """Additive counts: `tp`, `fp`, `fn` `[99]` (exact, per threshold), `tol_tp`,
        `tol_fp`, `tol_fn` `[99]` (tolerant), and the OIS sums `ois_tp`, `ois_fp`,
        `ois_fn`, `ois_tol_tp`, `ois_tol_fp`, `ois_tol_fn` (scalars: over images, each
        image's counts at its own best threshold)."""
        prob = jax.nn.sigmoid(pred[..., 0].astype(jnp.float32))
        pixels = valid[:, None, None]
        truth = (target > 0) & pixels
        levels = jnp.searchsorted(jnp.asarray(_EDGE_THRESHOLDS), prob, side="right")
        levels = jnp.where(pixels & ~jnp.isnan(prob), levels, 0).astype(jnp.int32)
        predicted = _counts_above(levels, jnp.ones_like(truth))  # [T, B]
        tp = _counts_above(levels, truth)
        edges = jnp.sum(truth, axis=(1, 2), dtype=jnp.int32)  # [B]
        counts = {"": (tp, predicted - tp, edges - tp)}
        orders = match_orders(self.radius, self.match_directions)
        if orders == (((0, 0),),):
            counts["tol_"] = counts[""]  # nothing but the pixel itself is in reach
        else:
            bits = _threshold_bits(levels)
            edge_bits = jnp.where(truth, jnp.uint32(0xFFFFFFFF), jnp.uint32(0))
            edge_bits = jnp.broadcast_to(edge_bits, bits.shape)
            tol_tp = None
            for order in orders:  # each a fori_loop over its offsets
                matched = _bit_counts(greedy_match(bits, edge_bits, order)[0])
                tol_tp = matched if tol_tp is None else jnp.maximum(tol_tp, matched)
            counts["tol_"] = (tol_tp, predicted - tol_tp, edges - tol_tp)
        stats = {}
        for prefix, (tp_k, fp_k, fn_k) in counts.items():
            stats[f"{prefix}tp"] = jnp.sum(tp_k, axis=1)
            stats[f"{prefix}fp"] = jnp.sum(fp_k, axis=1)
            stats[f"{prefix}fn"] = jnp.sum(fn_k, axis=1)
            for key, value in _image_scale_sums(tp_k, fp_k, fn_k).items():
                stats[f"ois_{prefix}{key}"] = value
        return stats

    def compute_metrics(self, stats):
        return {**_scores(stats, "", ""), **_scores(stats, "tol_", "_tol")}

    def headline_metrics(self):
        # The keys of the shipped multi_mnist baseline, with their meaning unchanged;
        # the other scores are in results.json.
        return ("f1", "ods_f")

    def metric_directions(self):
        zeros = np.zeros(len(_EDGE_THRESHOLDS), np.int64)
        stats = {
            f"{ois}{prefix}{k}": zeros[0] if ois else zeros
            for ois in ("", "ois_")
            for prefix in ("", "tol_")
            for k in ("tp", "fp", "fn")
        }
        return dict.fromkeys(self.compute_metrics(stats), HIGHER_IS_BETTER)

    def check_targets(self, target):
        super().check_targets(target)
        check_binary(self.name, target, "boundary targets")
