"""Image- and pixel-level metrics for anomaly detection.

Image-level metrics take one label (0 normal, 1 anomalous) and one score per image. Pixel-level metrics take
sequences of ground-truth masks and anomaly maps, paired by position; each pair shares a shape but pairs may
differ in size, so nothing here assumes a stacked ``(N, H, W)`` array (one still works, as a sequence).

A test set of a few hundred full-resolution maps holds tens of millions of pixels, so the pixel metrics pool
scores as float32 (the precision detectors produce maps in) and count with integers instead of building
float64 copies of everything; they stay exact on those float32 values, never binned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import trapezoid
from skimage.measure import label as label_components
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

__all__ = [
    "image_auroc",
    "pixel_auroc",
    "pixel_aupro",
    "f1_max",
    "threshold_metrics",
    "oracle_accuracy",
    "pixel_f1",
    "pixel_f1_max",
]

_POOL_DTYPE = np.float32
# searchsorted of this many scores at a time keeps its int64 index arrays small.
_CHUNK = 1 << 22


# --------------------------------------------------------------------------------------------- helpers
def _image_inputs(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y.astype(np.int64), s


def _pixel_pairs(masks: Sequence[ArrayLike], maps: Sequence[ArrayLike]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate and pair masks with maps; masks become boolean, maps keep their dtype (no copies)."""
    if len(masks) != len(maps):
        raise ValueError(f"got {len(masks)} masks but {len(maps)} maps")
    pairs = []
    for i, (mask, amap) in enumerate(zip(masks, maps)):
        mask = np.asarray(mask)
        amap = np.asarray(amap)
        if mask.ndim != 2 or mask.shape != amap.shape:
            raise ValueError(f"pair {i}: mask {mask.shape} and map {amap.shape} must be 2-D and the same shape")
        if np.issubdtype(amap.dtype, np.floating) and np.isnan(amap).any():
            raise ValueError(f"pair {i}: map contains NaN")
        pairs.append((mask > 0, amap))
    return pairs


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


# ------------------------------------------------------------------------------------------ image level
def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of image scores; nan when only one class is present (AUROC is undefined)."""
    y, s = _image_inputs(labels, scores)
    if np.unique(y).size < 2:
        return math.nan
    return float(roc_auc_score(y, s))


def f1_max(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Best F1 over all thresholds (predict anomalous when score >= threshold) and that threshold.

    Returns ``(nan, nan)`` when there is no anomalous image, since F1 is then undefined.
    """
    y, s = _image_inputs(labels, scores)
    if not y.any():
        return math.nan, math.nan
    precision, recall, thresholds = precision_recall_curve(y, s)
    # The last (precision=1, recall=0) point has no threshold; drop it.
    precision, recall = precision[:-1], recall[:-1]
    den = precision + recall
    f1 = np.divide(2 * precision * recall, den, out=np.zeros_like(den), where=den > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def threshold_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float) -> dict:
    """Confusion counts and rates when images scoring ``>= threshold`` are called anomalous.

    Undefined ratios (e.g. precision with no positive predictions) are reported as 0.0.
    """
    y, s = _image_inputs(labels, scores)
    pred = (s >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    return {
        "accuracy": _safe_div(tp + tn, y.size),
        "precision": precision,
        "recall": recall,
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "false_positive_rate": _safe_div(fp, fp + tn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def oracle_accuracy(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Best accuracy any single threshold reaches on this very set, and that threshold.

    An optimistic ceiling (the threshold is chosen on the labels being scored), useful to tell a bad ranking
    from a badly placed threshold. The threshold means ``score >= threshold`` is anomalous; ``inf`` means
    "call everything normal". Ties go to the highest threshold.
    """
    y, s = _image_inputs(labels, scores)
    if y.size == 0:
        return math.nan, math.nan
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0:
        return 1.0, math.inf
    if n_neg == 0:
        return 1.0, float(s.min())
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    correct = np.rint(tpr * n_pos) + np.rint((1.0 - fpr) * n_neg)
    best = int(np.argmax(correct))
    return float(correct[best] / y.size), float(thresholds[best])


# ------------------------------------------------------------------------------------------ pixel level
def pixel_auroc(masks: Sequence[ArrayLike], maps: Sequence[ArrayLike]) -> float:
    """ROC AUC over all pixels pooled across images; nan when all pixels are of one class.

    Computed as the Mann-Whitney statistic: sort each class's pooled float32 scores and count, for each
    anomalous pixel, the normal pixels below / tied with it via ``searchsorted``. Exact (ties count one half)
    with integer counts, and needs far less memory than ``roc_auc_score`` on tens of millions of pooled pixels.
    """
    pairs = _pixel_pairs(masks, maps)
    n_pos = sum(int(np.count_nonzero(m)) for m, _ in pairs)
    n_neg = sum(m.size for m, _ in pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan

    pos = np.empty(n_pos, dtype=_POOL_DTYPE)
    neg = np.empty(n_neg, dtype=_POOL_DTYPE)
    ip = ineg = 0
    for mask, amap in pairs:
        p = amap[mask]
        q = amap[~mask]
        pos[ip : ip + p.size] = p
        neg[ineg : ineg + q.size] = q
        ip += p.size
        ineg += q.size

    # Sorted lookup keys make searchsorted walk the sorted negatives nearly linearly, where random keys would
    # jump across tens of millions of them; float32 sorts are cheap.
    pos.sort()
    neg.sort()
    twice_u = 0  # sum over positives of (#neg < p) + (#neg <= p): the U statistic counting ties as 1/2, doubled
    for start in range(0, n_pos, _CHUNK):
        chunk = pos[start : start + _CHUNK]
        twice_u += int(np.searchsorted(neg, chunk, side="left").sum())
        twice_u += int(np.searchsorted(neg, chunk, side="right").sum())
    return twice_u / (2 * n_pos * n_neg)


def pixel_f1(masks: Sequence[ArrayLike], maps: Sequence[ArrayLike], threshold: float) -> float:
    """Pixel F1 pooled over all pixels of all images, predicting anomalous where ``map >= threshold``.

    Counts per image, so no pooled copy is made. 0.0 when there are neither anomalous nor predicted pixels.
    """
    tp = fp = fn = 0
    for mask, amap in _pixel_pairs(masks, maps):
        pred = amap >= threshold
        t = int(np.count_nonzero(pred & mask))
        tp += t
        fp += int(np.count_nonzero(pred)) - t
        fn += int(np.count_nonzero(mask)) - t
    return _safe_div(2 * tp, 2 * tp + fp + fn)


def pixel_f1_max(masks: Sequence[ArrayLike], maps: Sequence[ArrayLike]) -> tuple[float, float]:
    """Best pixel F1 over all thresholds (anomalous where ``map >= threshold``), pooled over all pixels of all
    images, and the lowest threshold that reaches it; ``(nan, nan)`` when no pixel is anomalous.

    The best cut always lies at an anomalous pixel's score (raising a cut to the next one loses no true
    positive), so only those are tried, each counted with ``searchsorted`` in the sorted scores of both classes:
    exact, and without the float64 copies of every pixel that a precision-recall curve builds.
    """
    pairs = _pixel_pairs(masks, maps)
    positives = np.sort(np.concatenate([amap[mask] for mask, amap in pairs]).astype(_POOL_DTYPE))
    if positives.size == 0:
        return math.nan, math.nan
    negatives = np.sort(np.concatenate([amap[~mask] for mask, amap in pairs]).astype(_POOL_DTYPE))
    cuts = np.unique(positives)
    true_positives = positives.size - np.searchsorted(positives, cuts, side="left")
    false_positives = negatives.size - np.searchsorted(negatives, cuts, side="left")
    f1 = 2 * true_positives / (true_positives + false_positives + positives.size)
    best = int(np.argmax(f1))
    return float(f1[best]), float(cuts[best])


def pixel_aupro(masks: Sequence[ArrayLike], maps: Sequence[ArrayLike], fpr_limit: float = 0.3) -> float:
    """Normalized area under the per-region-overlap curve up to ``fpr_limit`` (MVTec AD's AU-PRO).

    Each 8-connected component of a ground-truth mask is a region. For a threshold t (pixels ``>= t`` are
    predicted anomalous), PRO(t) is the mean over all regions of all images of the fraction of the region's
    pixels predicted, and FPR(t) the fraction of all normal pixels predicted. PRO is integrated over FPR from
    0 to ``fpr_limit`` (the curve interpolated linearly at the limit) and divided by ``fpr_limit``, so a
    perfect map scores 1.0. Unlike per-region overlap with a fixed threshold, this weights small defects as
    much as large ones, which pixel AUROC does not.

    Every distinct map value is a threshold, done with one sort: in descending score order each normal pixel
    adds 1 to the false positive count and each region pixel adds 1 / (region size * region count) to PRO,
    so cumulative sums give the whole curve. Normal pixels scoring below the quantile at which FPR passes
    the limit cannot affect the integral and are dropped before sorting. Scores are compared as float32.
    Returns nan if there are no regions or no normal pixels.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    pairs = [(mask, np.asarray(amap, dtype=_POOL_DTYPE)) for mask, amap in _pixel_pairs(masks, maps)]
    n_normal = sum(mask.size - int(np.count_nonzero(mask)) for mask, _ in pairs)
    if n_normal == 0 or not any(mask.any() for mask, _ in pairs):
        return math.nan

    cut = _normal_score_cut(pairs, n_normal, fpr_limit)
    fpr, pro = _pro_curve(pairs, cut, n_normal)
    return _area_to_limit(fpr, pro, fpr_limit) / fpr_limit


def _normal_score_cut(pairs: list[tuple[np.ndarray, np.ndarray]], n_normal: int, fpr_limit: float) -> np.floating:
    """The m-th highest normal score, m just past ``fpr_limit`` of the ``n_normal`` normal pixels.

    Only pixels scoring at least this matter: every curve point with FPR <= ``fpr_limit``, and the first one
    beyond it, depend on those pixels alone.
    """
    normal_scores = np.empty(n_normal, dtype=_POOL_DTYPE)
    at = 0
    for mask, amap in pairs:
        q = amap[~mask]
        normal_scores[at : at + q.size] = q
        at += q.size
    m = min(n_normal, int(math.floor(fpr_limit * n_normal)) + 2)
    kth = n_normal - m
    normal_scores.partition(kth)
    return normal_scores[kth]


def _descending_keys(
    pairs: list[tuple[np.ndarray, np.ndarray]], cut: np.floating
) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort keys of the region pixels and of the normal pixels scoring at least ``cut``, highest score first;
    with the size of each region (by region id - 1) and the number of regions.

    Each pixel becomes one int64 sort key (see :func:`_sort_keys`) holding its score and, in the low half, its
    region id: 0 for normal pixels, else 1-based over all images. One integer sort then replaces argsort plus
    gathers, several times slower at this size. Region pixels are all kept, even below the cut: they only add
    curve points past the one at the cut, whose FPR already exceeds the limit.
    """
    parts: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    n_regions = 0
    for mask, amap in pairs:
        normal_kept = amap >= cut
        normal_kept &= ~mask
        parts.append(_sort_keys(amap[normal_kept]))
        if mask.any():
            lab, k = label_components(mask, connectivity=2, return_num=True)
            lab = lab[mask]
            sizes.append(np.bincount(lab, minlength=k + 1)[1:])
            key = _sort_keys(amap[mask])
            key |= lab + n_regions
            parts.append(key)
            n_regions += k
    key = np.concatenate(parts)
    del parts
    key.sort()
    return key[::-1], np.concatenate(sizes), n_regions


def _pro_curve(
    pairs: list[tuple[np.ndarray, np.ndarray]], cut: np.floating, n_normal: int
) -> tuple[np.ndarray, np.ndarray]:
    """FPR and PRO at every distinct score from the highest down to the lowest kept (see
    :func:`_descending_keys`), after a first point at (0, 0)."""
    key, region_sizes, n_regions = _descending_keys(pairs, cut)
    # One curve point per distinct score, at the last pixel of each run of equal scores.
    score_bits = key >> 32
    ends = np.flatnonzero(score_bits[1:] != score_bits[:-1])
    del score_bits
    ends = np.append(ends, key.size - 1)
    # Region pixels are few: cumulate over them alone and count how many precede each curve point, so no
    # full-length float array is needed.
    key &= 0xFFFFFFFF
    region_pos = np.flatnonzero(key)
    region_ids = key[region_pos]
    del key
    weights = 1.0 / (region_sizes.astype(np.float64) * n_regions)
    pro_cum = np.concatenate(([0.0], np.cumsum(weights[region_ids - 1])))
    n_region_seen = np.searchsorted(region_pos, ends, side="right")
    fpr = np.concatenate(([0.0], (ends + 1 - n_region_seen) / n_normal))
    pro = np.concatenate(([0.0], np.minimum(pro_cum[n_region_seen], 1.0)))
    return fpr, pro


def _sort_keys(scores: np.ndarray) -> np.ndarray:
    """float32 scores as int64 keys ordered like the scores, the score in the high 32 bits, low bits zero.

    The bit pattern of a float read as a signed integer orders non-negative floats correctly and negative
    ones in reverse; flipping all but the sign bit of negatives fixes that. -0.0 becomes +0.0 first so that
    equal scores share one key.
    """
    key = (scores + np.float32(0.0)).view(np.int32).astype(np.int64)
    np.bitwise_xor(key, 0x7FFFFFFF, out=key, where=key < 0)
    key <<= 32
    return key


def _area_to_limit(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Trapezoid area under a curve with non-decreasing ``fpr`` (starting at 0) from 0 to ``limit``."""
    i = int(np.searchsorted(fpr, limit, side="right"))  # fpr[:i] <= limit
    x, y = fpr[:i], pro[:i]
    if i < fpr.size and x[-1] < limit:
        frac = (limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
        x = np.append(x, limit)
        y = np.append(y, pro[i - 1] + frac * (pro[i] - pro[i - 1]))
    return float(trapezoid(y, x))
