"""Read any image a user may hand us into RGB uint8 ``[H, W, 3]``, or fail clearly.

Handled: grayscale (replicated to 3 channels), alpha (the channel is dropped, as ppdet's
Decode does for RGBA input), 16-bit
(scaled to 8-bit), EXIF-free JPEG/PNG/BMP/WebP. Failures raise ``ImageReadError`` naming
the file and the problem (missing, unreadable, not an image, degenerate size).
"""
import os

import cv2
import numpy as np

MIN_SIDE = 2
MAX_PIXELS = 200_000_000  # beyond this decoding itself is a memory hazard


class ImageReadError(ValueError):
    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def to_rgb8(img, path="<array>"):
    """Normalise a decoded OpenCV image (BGR/BGRA/gray, 8/16-bit) to RGB uint8."""
    if img is None or img.size == 0:
        raise ImageReadError(path, "empty image")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(path, f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise ImageReadError(path, f"unsupported channel count {img.shape[2]}")
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageReadError(path, f"image too small ({w}x{h}); need at least {MIN_SIDE} px a side")
    return np.ascontiguousarray(img)


def read_image(path):
    """Decode ``path`` to RGB uint8 ``[H, W, 3]``; raises ``ImageReadError``."""
    if not os.path.exists(path):
        raise ImageReadError(path, "file not found")
    if os.path.isdir(path):
        raise ImageReadError(path, "is a directory")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageReadError(path, f"cannot read file ({e.strerror})") from None
    if not data:
        raise ImageReadError(path, "file is empty")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]:
        # OpenCV decodes a cut-off JPEG without error, filling the rest with grey
        raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(path, "not a decodable image (corrupt or unsupported format)")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageReadError(path, f"image too large ({img.shape[1]}x{img.shape[0]})")
    return to_rgb8(img, path)
