"""The ``Preprocess`` op list of ``infer_cfg.yml``, applied in numpy/OpenCV.

Split in two so batching can be planned before any pixel is decoded:

* :meth:`Preprocessor.resized_hw` maps an original ``(h, w)`` to the size the model's resize
  policy produces (pure arithmetic on the header size);
* :meth:`Preprocessor.apply` resizes a decoded image to a given size, normalises it and returns
  ``float32 [3, h, w]``. Padding to the batch shape happens when the batch is assembled.

Supported ops: ``Resize`` (``target_size``, ``keep_ratio``, ``interp``), ``NormalizeImage``
(``mean``, ``std``, ``is_scale``), ``Permute``. Unknown ops raise at load time.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

HW = Tuple[int, int]


class Preprocessor:
    """Builds from the ``Preprocess`` list of an :class:`~deploy.meta.ExportMeta`."""

    def __init__(self, ops: Sequence[Dict[str, Any]]):
        self.resize: Optional[Dict[str, Any]] = None
        self.mean = np.zeros(3, np.float32)
        self.std = np.ones(3, np.float32)
        self.is_scale = False
        self.permute = False
        for op in ops:
            kind = op["type"]
            args = {k: v for k, v in op.items() if k != "type"}
            if kind == "Resize":
                target = args.get("target_size")
                if isinstance(target, int):
                    target = [target, target]
                if not target or len(target) != 2:
                    raise ValueError(f"Resize.target_size must be [h, w] or an int, got {target}")
                self.resize = {"target": (int(target[0]), int(target[1])),
                               "keep_ratio": bool(args.get("keep_ratio", True)),
                               "interp": int(args.get("interp", cv2.INTER_LINEAR))}
            elif kind == "NormalizeImage":
                self.mean = np.asarray(args.get("mean", [0, 0, 0]), np.float32)
                self.std = np.asarray(args.get("std", [1, 1, 1]), np.float32)
                self.is_scale = bool(args.get("is_scale", True))
            elif kind == "Permute":
                self.permute = True
            else:
                raise ValueError(f"unsupported Preprocess op {kind!r} (deploy/preprocess.py)")
        if not self.permute:
            raise ValueError("Preprocess must end in Permute: the graph input is [B, 3, H, W]")
        # Fold /255 and mean/std into one multiply-add: x * a + b.
        scale = 1.0 / 255.0 if self.is_scale else 1.0
        self._a = (scale / self.std).astype(np.float32)
        self._b = (-self.mean / self.std).astype(np.float32)

    @property
    def keep_ratio(self) -> bool:
        """True when the resize keeps the aspect ratio (so image sizes vary)."""
        return bool(self.resize and self.resize["keep_ratio"])

    def resized_hw(self, h: int, w: int) -> HW:
        """Size ``(h', w')`` the model's resize policy gives an ``h x w`` image.

        ``keep_ratio``: scale = min(short_target / short_side, long_target / long_side), the
        ppdet ``Resize`` rule; otherwise the target size itself. No resize op: unchanged.
        """
        if self.resize is None:
            return h, w
        th, tw = self.resize["target"]
        if not self.resize["keep_ratio"]:
            return th, tw
        s = min(min(th, tw) / min(h, w), max(th, tw) / max(h, w))
        return max(1, int(round(h * s))), max(1, int(round(w * s)))

    def apply(self, img: np.ndarray, size: HW) -> np.ndarray:
        """Resize RGB ``uint8 [H, W, 3]`` to ``size`` and normalise.

        Returns:
            ``float32 [3, h, w]`` with ``(h, w) == size``.
        """
        h, w = size
        if img.shape[0] != h or img.shape[1] != w:
            interp = self.resize["interp"] if self.resize else cv2.INTER_LINEAR
            img = cv2.resize(img, (w, h), interpolation=interp)
        x = img.astype(np.float32)
        x *= self._a
        x += self._b
        return np.ascontiguousarray(x.transpose(2, 0, 1))


def round_up(v: int, stride: int) -> int:
    """Smallest multiple of ``stride`` that is >= ``v``."""
    return -(-v // stride) * stride


def preprocess_path(meta, path: str, pre: Optional[Preprocessor] = None) -> np.ndarray:
    """One image file as the graph input ``float32 [1, 3, H, W]``, exactly as the runner
    feeds it alone: zero-padded bottom/right to ``pad_stride`` (fixed-size graphs: to their
    fixed size). For calibration sets and parity inputs.

    Args:
        meta: :class:`deploy.meta.ExportMeta` of the export.
        path: Image file (decoded with :func:`deploy.imageio.decode_rgb`).
        pre: A :class:`Preprocessor` for ``meta`` to reuse across calls.
    """
    from .imageio import decode_rgb

    pre = pre or Preprocessor(meta.preprocess)
    img, _ = decode_rgb(path)
    h, w = pre.resized_hw(*img.shape[:2])
    if meta.fixed_hw is not None:
        H, W = meta.fixed_hw
    else:
        H, W = round_up(h, meta.stride), round_up(w, meta.stride)
    x = np.zeros((1, 3, H, W), np.float32)
    x[0, :, :h, :w] = pre.apply(img, (h, w))
    return x
