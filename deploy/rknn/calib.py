"""Calibration list for rknn int8/hybrid builds: ``.npy`` inputs preprocessed like the runner."""
from __future__ import annotations

import os

import numpy as np


def write_calibration_list(meta, image_dir: str, out_dir: str, *, num: int = 100,
                           seed: int = 0) -> str:
    """Preprocess ``num`` images of ``image_dir`` exactly as the runner does, as ``.npy``.

    Args:
        meta: :class:`deploy.meta.ExportMeta` with a fixed input shape.
        image_dir: A COCO image folder (use one disjoint from the evaluation set).
        out_dir: Where the ``.npy`` files and ``dataset.txt`` go.
        num: Images to use (a seeded random choice, sorted by name first).

    Returns:
        Path of ``dataset.txt`` (one ``.npy`` ``[1, 3, H, W]`` float32 path a line).
    """
    from ..imageio import list_images
    from ..preprocess import Preprocessor, preprocess_path

    if meta.fixed_hw is None:
        raise ValueError("calibration needs a fixed input shape (export with --input_shape H W)")
    files = list_images(image_dir)
    pick = np.random.RandomState(seed).permutation(len(files))[:num]
    pre = Preprocessor(meta.preprocess)
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    for i in sorted(pick):
        x = preprocess_path(meta, files[i], pre)
        name = os.path.splitext(os.path.basename(files[i]))[0]
        path = os.path.join(os.path.abspath(out_dir), name + ".npy")
        np.save(path, x)
        lines.append(path)
    txt = os.path.join(out_dir, "dataset.txt")
    with open(txt, "w") as f:
        f.write("\n".join(lines) + "\n")
    return txt
