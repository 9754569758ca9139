"""Compare two detection sets of the same image (e.g. bs=8 vs bs=1) with a stated tolerance.

Padding is zeros after normalisation; a network with biases or BatchNorm turns it into
non-zero activations that reach the image's bottom/right border through the receptive
field, so a batch padded further than the image's own stride padding can move scores near
those borders by a little. The check therefore matches detections rather than comparing rows:
every detection of ``a`` scoring at least ``min_score`` must have a partner in ``b`` of the same
class with IoU >= ``iou_min`` and ``|score difference| <= score_tol`` (and vice versa).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
