"""Numpy post-processing of raw graph outputs, per image of a batch.

NMS is never inside an exported graph (docs/export_format.md), so it runs here:

* ``nms``: per-class greedy NMS (ppdet ``MultiClassNMS`` semantics: score threshold, at most
  ``nms_top_k`` candidates per class, IoU without the legacy +1, ``keep_top_k`` over classes);
* ``topk``: top-k over all queries x classes, no NMS (DETR family on dense outputs);
* ``none``: the graph already selected (``topk`` outputs ``scores``/``labels``/``boxes``).

Candidates centred in the batch padding are dropped (see :func:`postprocess_batch`). Each
image's detections are mapped back to its original frame by dividing by its resize
factors and clipping; padding never moves the origin, so the padded batch shape plays no part.
Output rows: ``[M, 6]`` = ``(class_id, score, x1, y1, x2, y2)``, score-descending.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .meta import PostprocessCfg

EMPTY = np.zeros((0, 6), np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int = -1) -> np.ndarray:
    """Greedy NMS.

    Args:
        boxes: ``[K, 4]`` xyxy.
        scores: ``[K]``.
        iou_threshold: Suppress a box whose IoU with a kept box is > this.
        max_keep: Stop after this many kept boxes (-1: no limit). Exact, because boxes are
            visited in score order and a kept box never depends on later ones.

    Returns:
        Kept indices into ``boxes``, score-descending (ties: lower index first).
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float64) for k in range(4))
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    keep: List[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        if 0 < max_keep <= len(keep):
            break
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        # IoU > t  <=>  inter > t * union (union >= inter >= 0; no division, no 0/0)
        order = rest[~(inter > iou_threshold * union) | (union <= 0)]
    return np.asarray(keep, np.int64)


def _nms_top(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, keep_top_k: int) -> np.ndarray:
    """:func:`nms` with ``max_keep``, run on a growing score-ordered prefix.

    Exact: suppression only flows from higher to lower scores, so if the best ``m``
    candidates already yield ``keep_top_k`` boxes, the rest cannot change them. Low score
    thresholds leave tens of thousands of candidates; the prefix is usually a few hundred.
    """
    if keep_top_k <= 0 or scores.size <= 4 * keep_top_k:
        return nms(boxes, scores, iou_threshold, keep_top_k)
    m = max(1024, 8 * keep_top_k)
    while True:
        if m < scores.size:
            part = np.argpartition(-scores, m - 1)[:m]
            # ties at the cut could differ from a full sort; include every tie of the m-th score
            cut = scores[part].min()
            head = np.nonzero(scores >= cut)[0]
        else:
            head = np.arange(scores.size)
        head = head[np.lexsort((head, -scores[head]))]
        keep = nms(boxes[head], scores[head], iou_threshold, keep_top_k)
        if keep.size >= keep_top_k or head.size >= scores.size:
            return head[keep]
        m *= 4


def multiclass_nms(scores: np.ndarray, boxes: np.ndarray, cfg: PostprocessCfg) -> np.ndarray:
    """Per-class NMS for one image.

    Args:
        scores: ``[N, C]`` class probabilities.
        boxes: ``[N, 4]`` xyxy (any frame).

    Returns:
        ``[M, 6]`` rows ``(class_id, score, x1, y1, x2, y2)``, ``M <= keep_top_k``.
    """
    n_idx, c_idx = np.nonzero(scores > cfg.score_threshold)
    if n_idx.size == 0:
        return EMPTY
    s = scores[n_idx, c_idx]
    if cfg.nms_top_k > 0:
        # At most nms_top_k candidates per class (only classes over the limit need work).
        counts = np.bincount(c_idx)
        over = np.nonzero(counts > cfg.nms_top_k)[0]
        if over.size:
            drop = np.zeros(s.size, bool)
            for c in over:
                members = np.nonzero(c_idx == c)[0]
                order = members[np.lexsort((members, -s[members]))]
                drop[order[cfg.nms_top_k:]] = True
            n_idx, c_idx, s = n_idx[~drop], c_idx[~drop], s[~drop]
    b = boxes[n_idx].astype(np.float64)
    if not cfg.class_agnostic:
        # Offset each class to its own region so one NMS pass never mixes classes.
        span = float(np.abs(b).max()) * 2 + 1.0 if b.size else 1.0
        nb = b + (c_idx.astype(np.float64) * span)[:, None]
    else:
        nb = b
    keep = _nms_top(nb, s, cfg.nms_threshold, cfg.keep_top_k)
    out = np.empty((keep.size, 6), np.float32)
    out[:, 0] = c_idx[keep]
    out[:, 1] = s[keep]
    out[:, 2:] = boxes[n_idx[keep]]
    return out


def topk_select(scores: np.ndarray, boxes: np.ndarray, k: int) -> np.ndarray:
    """Top ``k`` (query, class) pairs for one image, no NMS. ``scores [N, C]``, ``boxes [N, 4]``."""
    flat = scores.reshape(-1)
    k = min(k, flat.size)
    idx = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
    idx = idx[np.lexsort((idx, -flat[idx]))]
    c = scores.shape[1]
    out = np.empty((k, 6), np.float32)
    out[:, 0] = idx % c
    out[:, 1] = flat[idx]
    out[:, 2:] = boxes[idx // c]
    return out


def to_original(dets: np.ndarray, scale_yx: Tuple[float, float], orig_hw: Tuple[int, int]) -> np.ndarray:
    """Map ``[M, 6]`` detections from network-input pixels to the original image, clipped."""
    if dets.size == 0:
        return dets
    sy, sx = scale_yx
    h, w = orig_hw
    out = dets.copy()
    out[:, [2, 4]] = np.clip(out[:, [2, 4]] / sx, 0, w)
    out[:, [3, 5]] = np.clip(out[:, [3, 5]] / sy, 0, h)
    return out


def inside(boxes: np.ndarray, content_hw: Tuple[int, int]) -> np.ndarray:
    """``[N]`` bool: box centre lies inside the image content ``[0, w) x [0, h)``."""
    h, w = content_hw
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    return (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)


def postprocess_batch(outputs: Sequence[np.ndarray], output_names: Sequence[str], cfg: PostprocessCfg,
                      scales: Sequence[Tuple[float, float]], orig_hws: Sequence[Tuple[int, int]],
                      content_hws: Optional[Sequence[Tuple[int, int]]] = None) -> List[np.ndarray]:
    """Detections per image of a batch, in the original frames.

    Args:
        outputs: Graph outputs in ``output_names`` order, each with a leading batch axis ``B``.
        output_names: ``scores``/``boxes`` (dense) or ``scores``/``labels``/``boxes`` (topk).
        cfg: Post-processing settings.
        scales: Per image ``(scale_y, scale_x)`` = fed size / original size.
        orig_hws: Per image original ``(h, w)``.
        content_hws: Per image ``(h, w)`` of the image inside the padded input. When given,
            candidates whose box centre lies in the padding are dropped before NMS: they
            describe no pixel of the image, and how many there are depends on how far the
            batch was padded, so dropping them keeps bs>1 equal to bs=1.

    Returns:
        ``B`` arrays ``[M_i, 6]``.
    """
    named: Dict[str, np.ndarray] = dict(zip(output_names, outputs))
    bsz = len(scales)
    for k, v in named.items():
        if v.shape[0] != bsz:
            raise ValueError(f"output {k!r} has batch {v.shape[0]}, expected {bsz}")
    results = []
    for b in range(bsz):
        scores, boxes = named["scores"][b], named["boxes"][b]
        labels = named.get("labels")
        labels = labels[b] if labels is not None else None
        if content_hws is not None:
            keep = inside(boxes, content_hws[b])
            if not keep.all():
                scores, boxes = scores[keep], boxes[keep]
                labels = labels[keep] if labels is not None else None
        if cfg.type == "nms":
            dets = multiclass_nms(scores, boxes, cfg)
        elif cfg.type == "topk":
            dets = topk_select(scores, boxes, cfg.num_top_queries)
        else:
            dets = np.concatenate([labels[:, None].astype(np.float32), scores[:, None].astype(np.float32),
                                   boxes.astype(np.float32)], axis=1)
            dets = dets[np.argsort(-dets[:, 1], kind="stable")]
        results.append(to_original(dets, scales[b], orig_hws[b]))
    return results
