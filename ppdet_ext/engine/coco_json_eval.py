"""COCO evaluation of a ``bbox.json`` (ppdet's results format: ``image_id``,
``category_id``, ``bbox`` xywh, ``score``): the 12 summary stats and ppdet's ``--classwise``
per-category AP table and precision-recall curves — written under a directory we choose
(ppdet's own ``--classwise`` draws its curves into ``./bbox_pr_curve`` of the current
directory and only logs the table).
"""
import contextlib
import io
import json
import os

import numpy as np

COCO_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl",
                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def coco_eval(anno_file, bbox_json):
    """A pycocotools ``COCOeval`` over ``bbox_json`` after ``evaluate``/``accumulate``/
    ``summarize`` (its prints captured), or None when the file has no detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with open(bbox_json) as f:
        dets = json.load(f)
    if not dets:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(anno_file)
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def stats(ev):
    """``{AP: ..., AP50: ..., ...}`` of an evaluated ``COCOeval`` (all 0 when None)."""
    values = ev.stats if ev is not None else np.zeros(len(COCO_STAT_NAMES))
    return {k: float(v) for k, v in zip(COCO_STAT_NAMES, values)}


def per_class(ev):
    """Per-category rows ``{category_id, name, AP, AP50}`` (AP@[.5:.95] and AP@.5, all
    areas, 100 detections — ppdet's table shows the first); NaN for a category without
    ground truth."""
    precision = ev.eval["precision"]  # [iou, recall, class, area, max dets]
    rows = []
    for k, cat_id in enumerate(ev.params.catIds):
        p_all = precision[:, :, k, 0, -1]
        p_50 = precision[0, :, k, 0, -1]
        rows.append({"category_id": int(cat_id), "name": ev.cocoGt.cats[int(cat_id)]["name"],
                     "AP": float(np.mean(p_all[p_all > -1])) if (p_all > -1).any() else float("nan"),
                     "AP50": float(np.mean(p_50[p_50 > -1])) if (p_50 > -1).any() else float("nan")})
    return rows


def table(rows, columns=3):
    """ppdet's layout: ``category | AP`` pairs, ``columns`` pairs per line, AP to 3 places."""
    cells = [(r["name"], "nan" if np.isnan(r["AP"]) else f"{r['AP']:.3f}") for r in rows]
    width = max([len("category")] + [len(c[0]) for c in cells])
    head = " | ".join(f"{'category':<{width}} | {'AP':>5}" for _ in range(min(columns, len(cells))))
    lines = [head, "-" * len(head)]
    for i in range(0, len(cells), columns):
        lines.append(" | ".join(f"{n:<{width}} | {ap:>5}" for n, ap in cells[i:i + columns]))
    return "\n".join(lines)


def write_classwise(ev, out_dir):
    """Write ``classwise_ap.txt`` (the table), ``classwise_ap.json`` (rows) and
    ``bbox_pr_curve/<name>_precision_recall_curve.jpg`` (IoU 0.5, as ppdet) into
    ``out_dir``; returns ``(rows, table_text)``."""
    from ppdet.metrics.map_utils import draw_pr_curve

    rows = per_class(ev)
    text = table(rows)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "classwise_ap.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, "classwise_ap.json"), "w") as f:
        json.dump(rows, f, indent=1)
    recall = np.arange(0.0, 1.01, 0.01)
    curves = os.path.join(out_dir, "bbox_pr_curve")
    for k, row in enumerate(rows):
        draw_pr_curve(ev.eval["precision"][0, :, k, 0, -1], recall, out_dir=curves,
                      file_name=f"{row['name']}_precision_recall_curve.jpg")
    return rows, text
