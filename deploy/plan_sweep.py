"""Padding waste of every (policy, batch size) from image headers alone, without a model run.

Needs only ``infer_cfg.yml`` and the image headers: exact plan-level numbers for models too
slow to time on a machine (e.g. GFL at 800x1333).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

from .environment import environment
from .imageio import probe_sizes
from .meta import load_meta
from .planner import plan_batches
from .preprocess import Preprocessor


def plan_sweep(model_dir: str, images: Sequence[str], *, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16),
               policies: Sequence[str] = ("none", "orientation", "buckets", "shape"),
               num_buckets: int = 3) -> Dict[str, Any]:
    """One row per (batch size, policy): ``waste_pct``, ``batches``, ``distinct_shapes``,
    ``mpix_fed``; unreadable images are counted and left out (``images_unreadable``)."""
    meta = load_meta(model_dir)
    pre = Preprocessor(meta.preprocess)
    sizes, errors = probe_sizes(images, max_pixels=None, min_side=1)
    fed = [pre.resized_hw(*s) for s in sizes if s is not None]
    rows = []
    for bs in batch_sizes:
        for pol in policies:
            plan = plan_batches(fed, bs, pol, stride=meta.stride, num_buckets=num_buckets,
                                fixed_hw=meta.fixed_hw)
            rows.append({"policy": pol, "batch_size": bs, "waste_pct": 100 * plan.waste_fraction,
                         "batches": len(plan.batches), "distinct_shapes": len({b.shape for b in plan.batches}),
                         "mpix_fed": plan.total_pixels / 1e6})
    return {"env": environment(), "rows": rows, "images_unreadable": len(errors),
            "preprocess": list(meta.preprocess), "pad_stride": meta.pad_stride}
