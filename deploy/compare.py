"""Same outputs, same detections: the one home of "these two runs agree", in numpy.

* **Same outputs** (raw graph outputs of two engines, or of a model before and after a
  conversion): :func:`output_diff` gives the max absolute difference, the max difference
  relative to the reference's largest magnitude, and the Pearson correlation; the INT8 and
  pruning reports also use :func:`rel_l2`, :func:`cosine` and :func:`mean_abs_diff`. DETR outputs are
  a set: :func:`query_order` pairs the rows of two runs first (queries whose selection scores
  are within float noise can swap places between engines).
* **Same detections** (post-processed ``[M, 6]`` rows of the same image):
  :func:`match_detections` matches under a stated :class:`Tolerance`.

Why detections are matched rather than compared row by row: padding is zeros after
normalisation, and a network with biases or BatchNorm turns it into non-zero activations
that reach the image's bottom/right border through the receptive field, so a batch padded
further than the image's own stride padding can move scores near those borders by a little.
Every detection of ``a`` scoring at least ``min_score`` must have a partner in ``b`` of the
same class with IoU >= ``iou_min`` and ``|score difference| <= score_tol`` (and vice versa).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class OutputDiff:
    """How far ``got`` is from ``ref``.

    Attributes:
        max_abs: ``max |got - ref|``.
        max_rel: ``max_abs / max |ref|`` (relative to the reference's range, not per element:
            per-element ratios explode where the reference is near 0).
        corr: Pearson correlation over all elements (1.0 when both are constant and equal).
    """

    max_abs: float
    max_rel: float
    corr: float


def max_abs_diff(got, ref) -> float:
    """``max |got - ref|`` over all elements (0.0 for empty arrays)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max()) if got.size else 0.0


def mean_abs_diff(got, ref) -> float:
    """``mean |got - ref|`` over all elements, in float64."""
    return float(np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64)).mean())


def rel_l2(got, ref) -> float:
    """``||got - ref||_2 / ||ref||_2`` over all elements, in float64."""
    g, r = np.asarray(got, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    return float(np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-12))


def cosine(got, ref) -> float:
    """Cosine similarity of two arrays, flattened, in float64."""
    g, r = np.asarray(got, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    return float(np.dot(r, g) / max(np.linalg.norm(r) * np.linalg.norm(g), 1e-12))


def correlation(got, ref) -> float:
    """Pearson correlation of two arrays, flattened, in float64."""
    a, b = np.asarray(got, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def output_diff(got, ref) -> OutputDiff:
    """:class:`OutputDiff` of two same-shape arrays."""
    if np.shape(got) != np.shape(ref):
        raise ValueError(f"shapes differ: {np.shape(got)} vs {np.shape(ref)}")
    d = max_abs_diff(got, ref)
    scale = float(np.abs(np.asarray(ref, np.float64)).max()) if np.size(ref) else 0.0
    return OutputDiff(d, d / scale if scale > 0 else d, correlation(got, ref))


def query_order(boxes, ref_boxes) -> np.ndarray:
    """Per image, the row of ``boxes`` that corresponds to each row of ``ref_boxes``.

    Args:
        boxes, ref_boxes: ``[B, Q, 4]`` (any box layout, the same for both).

    Returns:
        ``[B, Q]`` int: ``boxes[i][order[i]]`` lines up with ``ref_boxes[i]`` (Hungarian
        matching on the L1 box distance; needs scipy).
    """
    from scipy.optimize import linear_sum_assignment

    boxes, ref_boxes = np.asarray(boxes), np.asarray(ref_boxes)
    orders = []
    for a, b in zip(boxes, ref_boxes):
        rows, cols = linear_sum_assignment(np.abs(a[:, None, :] - b[None, :, :]).sum(-1))
        orders.append(rows[np.argsort(cols)])
    return np.stack(orders) if orders else np.zeros((0, 0), np.int64)


@dataclass(frozen=True)
class Tolerance:
    """The stated tolerance for "same detections"."""

    min_score: float = 0.3
    score_tol: float = 0.02
    iou_min: float = 0.95
    margin: float = 0.02  # a detection within this of min_score may be absent on the other side


@dataclass
class MatchReport:
    compared: int = 0
    unmatched: int = 0
    max_score_diff: float = 0.0
    min_iou: float = 1.0

    @property
    def ok(self) -> bool:
        return self.unmatched == 0

    def merge(self, other: "MatchReport") -> "MatchReport":
        return MatchReport(self.compared + other.compared, self.unmatched + other.unmatched,
                           max(self.max_score_diff, other.max_score_diff), min(self.min_iou, other.min_iou))

    def as_dict(self) -> Dict[str, float]:
        return {"compared": self.compared, "unmatched": self.unmatched,
                "max_score_diff": self.max_score_diff, "min_iou": self.min_iou}


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.maximum(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0)
    ih = np.maximum(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0)
    inter = iw * ih
    area = lambda b: np.maximum(b[..., 2] - b[..., 0], 0) * np.maximum(b[..., 3] - b[..., 1], 0)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)


def _one_way(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> MatchReport:
    rep = MatchReport()
    for det in a[a[:, 1] >= tol.min_score + tol.margin] if a.size else a:
        rep.compared += 1
        cand = b[(b[:, 0] == det[0])] if b.size else b
        if cand.size == 0:
            rep.unmatched += 1
            continue
        ious = _iou(det[2:], cand[:, 2:])
        ds = np.abs(cand[:, 1] - det[1])
        ok = (ious >= tol.iou_min) & (ds <= tol.score_tol)
        if not ok.any():
            rep.unmatched += 1
            best = int(np.argmax(ious - ds))
            rep.min_iou = min(rep.min_iou, float(ious[best]))
            rep.max_score_diff = max(rep.max_score_diff, float(ds[best]))
            continue
        j = int(np.argmin(np.where(ok, ds, np.inf)))
        rep.max_score_diff = max(rep.max_score_diff, float(ds[j]))
        rep.min_iou = min(rep.min_iou, float(ious[j]))
    return rep


def match_detections(a: np.ndarray, b: np.ndarray, tol: Tolerance = Tolerance()) -> MatchReport:
    """Symmetric match of two ``[M, 6]`` ``(class, score, x1, y1, x2, y2)`` arrays."""
    return _one_way(a, b, tol).merge(_one_way(b, a, tol))


def match_images(a: Iterable[Optional[np.ndarray]], b: Iterable[Optional[np.ndarray]],
                 tol: Tolerance = Tolerance()) -> MatchReport:
    """:func:`match_detections` of every image pair, merged; a pair with a ``None`` side (the
    image failed in that run) is skipped."""
    rep = MatchReport()
    for da, db in zip(a, b):
        if da is not None and db is not None:
            rep = rep.merge(match_detections(da, db, tol))
    return rep


def diff_named(got: Sequence, ref: Sequence, names: Sequence[str]) -> Dict[str, float]:
    """``{name: max_abs_diff}`` of two output lists in the same order."""
    return {n: max_abs_diff(g, r) for n, g, r in zip(names, got, ref)}
