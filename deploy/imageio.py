"""Finding and reading images: the one image lister, header probe, decode to RGB uint8, and
per-file error reports.

:func:`list_images` is how every tool turns a folder, a glob or a list of files into image
paths; :func:`annotated_images` lists a COCO annotation file's images, by default from
``<annotation dir>/../images`` (:func:`default_image_dir`, the COCO layout).

Every problem is raised as :class:`ImageError` carrying the file name, so one bad file in a
batch is reported and skipped while the rest of the batch still runs. Conversions that keep
the image usable (grayscale, alpha, 16-bit) are not errors; they come back as notes.

Orientation: pixels are used as stored (EXIF orientation is ignored), which is the frame COCO
annotations use; the header probe and the decoder agree on it.
"""
from __future__ import annotations

import glob
import json
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; bounds a worker's memory (RGB + float copy)
DEFAULT_MIN_SIDE = 2  # a 1-pixel side has no spatial content to detect anything in
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
HW = Tuple[int, int]


def list_images(sources: Union[str, Sequence[str]], limit: Optional[int] = None, *,
                require: bool = True) -> List[str]:
    """Image paths named by ``sources``, expanded in the order given.

    Args:
        sources: A path or a list of paths: a folder gives its image files (by extension,
            :data:`IMAGE_EXTS`) sorted by name; a pattern with ``*?[`` its matches, sorted; any
            other path is kept as given, even when it does not exist (reading it reports it).
        limit: Keep the first ``limit`` paths.
        require: Raise when nothing is found.

    Raises:
        FileNotFoundError: ``require`` and no image was found.
    """
    out: List[str] = []
    for item in [sources] if isinstance(sources, str) else sources:
        item = str(item)
        if os.path.isdir(item):
            out += sorted(os.path.join(item, f) for f in os.listdir(item)
                          if f.lower().endswith(IMAGE_EXTS))
        elif any(c in item for c in "*?["):
            out += sorted(glob.glob(item))
        else:
            out.append(item)
    if require and not out:
        raise FileNotFoundError(f"no images in {sources}")
    return out[:limit] if limit else out


def default_image_dir(ann_file: str) -> str:
    """``<annotation dir>/../images``: where a COCO-layout dataset keeps its images."""
    return os.path.normpath(os.path.join(os.path.dirname(ann_file), "..", "images"))


def annotated_images(ann_file: str, image_dir: Optional[str] = None) -> List[str]:
    """Paths of the images of a COCO annotation file, in annotation order.

    Args:
        ann_file: COCO ``instances_*.json``.
        image_dir: Their folder; default :func:`default_image_dir`.
    """
    with open(ann_file) as f:
        images = json.load(f)["images"]
    image_dir = image_dir or default_image_dir(ann_file)
    return [os.path.join(image_dir, im["file_name"]) for im in images]


class ImageError(Exception):
    """An image that cannot be used; ``str()`` starts with the file name."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def probe_size(path: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int = DEFAULT_MIN_SIDE) -> Tuple[int, int]:
    """Read ``(height, width)`` from the file header without decoding the pixels.

    Raises:
        ImageError: Unreadable path, unknown/corrupt header, or a size outside the limits.
    """
    if not os.path.isfile(path):
        raise ImageError(path, "no such file" if not os.path.exists(path) else "not a regular file")
    from PIL import Image  # header-only parse; cv2 has no size-without-decode API

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: we check size below
            Image.MAX_IMAGE_PIXELS = None
            with Image.open(path) as im:
                w, h = im.size
    except OSError as e:  # includes PermissionError and PIL.UnidentifiedImageError
        raise ImageError(path, f"cannot read image header ({type(e).__name__}: {e})") from None
    check_size(path, h, w, max_pixels=max_pixels, min_side=min_side)
    return int(h), int(w)


def probe_sizes(paths: Sequence[str], *, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                min_side: int = DEFAULT_MIN_SIDE) -> Tuple[List[Optional[HW]], Dict[int, str]]:
    """:func:`probe_size` of every path: sizes (``None`` on failure) and ``{index: error}``."""
    sizes: List[Optional[HW]] = []
    errors: Dict[int, str] = {}
    for i, p in enumerate(paths):
        try:
            sizes.append(probe_size(p, max_pixels=max_pixels, min_side=min_side))
        except ImageError as e:
            sizes.append(None)
            errors[i] = str(e)
    return sizes, errors


def check_size(path: str, h: int, w: int, *, max_pixels: int | None, min_side: int) -> None:
    """Raise :class:`ImageError` when ``h x w`` is outside ``[min_side, max_pixels]``."""
    if min(h, w) < min_side:
        raise ImageError(path, f"image too small: {w}x{h} (min side {min_side} px)")
    if max_pixels and h * w > max_pixels:
        raise ImageError(path, f"image too large: {w}x{h} = {h * w / 1e6:.1f} MP "
                               f"> max_pixels {max_pixels / 1e6:.1f} MP")


def decode_rgb(path: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               min_side: int = DEFAULT_MIN_SIDE) -> Tuple[np.ndarray, List[str]]:
    """Decode a file to RGB ``uint8 [H, W, 3]``.

    Returns:
        ``(image, notes)``; notes name any conversion made (``"grayscale -> RGB"``,
        ``"alpha channel dropped"``, ``"16-bit -> 8-bit"``).

    Raises:
        ImageError: The file cannot be read or decoded, or its size is outside the limits.
    """
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(path, f"cannot read file ({type(e).__name__}: {e})") from None
    if buf.size == 0:
        raise ImageError(path, "empty file")
    if buf[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in buf[-4096:].tobytes():
        # OpenCV decodes a cut-off JPEG without error, filling the rest with grey
        raise ImageError(path, "truncated JPEG (no end-of-image marker)")
    # IMREAD_UNCHANGED keeps 16-bit depth and alpha so we can convert them explicitly.
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(path, "cannot decode (corrupt file or unsupported format)")
    check_size(path, img.shape[0], img.shape[1], max_pixels=max_pixels, min_side=min_side)
    notes: List[str] = []
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
        notes.append("16-bit -> 8-bit")
    elif img.dtype != np.uint8:
        raise ImageError(path, f"unsupported pixel type {img.dtype}")
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2RGB)
        notes.append("grayscale -> RGB")
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        notes.append("alpha channel dropped")
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise ImageError(path, f"unsupported channel count {img.shape[2]}")
    return img, notes
