"""COCO box AP of runner results (pycocotools), to prove batching changed nothing.

Class index ``i`` maps to ``category_ids[i]`` when the export records them, else to the ``i``-th
category of the annotation file in id order (the ppdet convention for COCO label lists).
Images are matched by file name.
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Dict, List, Optional, Sequence

from .runner import ImageResult


def to_coco_json(results: Sequence[ImageResult], coco, category_ids: Sequence[int] = ()) -> List[Dict]:
    """Detections as COCO result dicts (``bbox`` = x, y, w, h)."""
    by_name = {os.path.basename(im["file_name"]): im["id"] for im in coco.dataset["images"]}
    cat_ids = list(category_ids) or sorted(coco.getCatIds())
    out = []
    for r in results:
        if not r.ok:
            continue
        img_id = by_name.get(os.path.basename(r.path))
        if img_id is None:
            continue
        for c, s, x1, y1, x2, y2 in r.dets.tolist():
            out.append({"image_id": img_id, "category_id": cat_ids[int(c)],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    return out


def coco_ap(results: Sequence[ImageResult], ann_file: str, *, category_ids: Sequence[int] = (),
            quiet: bool = True) -> Dict[str, Optional[float]]:
    """``{"AP": ..., "AP50": ..., "AP75": ...}`` over the images present in ``results``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        gt = COCO(ann_file)
        dets = to_coco_json(results, gt, category_ids)
        if not dets:
            return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        names = {os.path.basename(r.path) for r in results}
        ev.params.imgIds = [im["id"] for im in gt.dataset["images"] if im["file_name"] in names]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1]), "AP75": float(ev.stats[2])}
