"""Image reading for the training-side tools: the deploy reader is the one implementation.

``deploy.imageio.decode_rgb`` turns any usable file into RGB uint8 ``[H, W, 3]``
(grayscale replicated, alpha dropped, 16-bit scaled) and raises ``ImageError`` naming the
file for everything else (missing, empty, truncated JPEG, undecodable, 1x1, too large).
Training code may import deploy; deploy never imports training code.
"""
from ppdet_ext_deploy.imageio import ImageError as ImageReadError  # noqa: F401
from ppdet_ext_deploy.imageio import decode_rgb


def read_image(path):
    """Decode ``path`` to RGB uint8 ``[H, W, 3]``; raises ``ImageReadError``."""
    return decode_rgb(path)[0]
