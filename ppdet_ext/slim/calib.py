"""Calibration data: images from a folder or a COCO annotation file, preprocessed like the
export's ``infer_cfg.yml`` (the same numpy code the deploy runner uses).
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence

import numpy as np

from ppdet_ext_deploy.imageio import annotated_images, list_images
from ppdet_ext_deploy.meta import ExportMeta
from ppdet_ext_deploy.preprocess import Preprocessor, preprocess_path


def calib_files(source: str, limit: Optional[int] = None, *, image_dir: Optional[str] = None) -> List[str]:
    """Image paths for calibration, sorted by name (deterministic).

    Args:
        source: A folder of images, or a COCO annotation ``.json`` (images are looked up in
            ``image_dir``, default ``<ann dir>/../images``).
        limit: Keep the first ``limit`` files.
    """
    if os.path.isdir(source):
        files = list_images(source, require=False)
    elif source.endswith(".json") and os.path.isfile(source):
        files = sorted(annotated_images(source, image_dir))
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
