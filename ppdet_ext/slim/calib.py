"""Calibration data: images from a folder or a COCO annotation file, preprocessed like the
export's ``infer_cfg.yml`` (the same numpy code the deploy runner uses).
"""
from __future__ import annotations

import json
import os
from typing import Iterator, List, Optional, Sequence

import numpy as np

from ppdet_ext_deploy.meta import ExportMeta
from ppdet_ext_deploy.preprocess import Preprocessor, preprocess_path

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def calib_files(source: str, limit: Optional[int] = None, *, image_dir: Optional[str] = None) -> List[str]:
    """Image paths for calibration, sorted by name (deterministic).

    Args:
        source: A folder of images, or a COCO annotation ``.json`` (images are looked up in
            ``image_dir``, default ``<ann dir>/../images``).
        limit: Keep the first ``limit`` files.
    """
    if os.path.isdir(source):
        files = sorted(os.path.join(source, f) for f in os.listdir(source)
                       if f.lower().endswith(IMAGE_EXTS))
    elif source.endswith(".json") and os.path.isfile(source):
        with open(source) as f:
            names = sorted(im["file_name"] for im in json.load(f)["images"])
        image_dir = image_dir or os.path.join(os.path.dirname(os.path.dirname(source)), "images")
        files = [os.path.join(image_dir, n) for n in names]
    else:
        raise FileNotFoundError(f"calibration source {source!r} is neither a folder of images "
                                "nor a COCO annotation .json")
    if not files:
        raise FileNotFoundError(f"no images in calibration source {source}")
    return files[:limit] if limit else files


def calib_batches(meta: ExportMeta, files: Sequence[str]) -> Iterator[np.ndarray]:
    """Yields ``float32 [1, 3, H, W]`` per file (batch 1: keep-ratio inputs vary in size)."""
    pre = Preprocessor(meta.preprocess)
    for f in files:
        yield preprocess_path(meta, f, pre)
