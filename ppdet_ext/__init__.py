"""ppdet_ext: our modules registered into PaddleDetection 2.6.0's own workspace.

``import ppdet_ext`` (1) applies the compatibility fixes the pinned Paddle needs, then
(2) registers every module we ship, so configs name them like stock ppdet modules.
All class names we register start with ``Ext`` so that they never collide with names
stock ppdet (2.6.0 or newer) registers; see ``ppdet_ext.registry``.
"""
from . import compat  # noqa: F401  (first: see compat/zlib_first.py)

import ppdet  # noqa: E402,F401

from . import data, modeling  # noqa: E402,F401
from .registry import ext_module_names, snapshot_pristine_config  # noqa: E402

__version__ = "0.1.0"

snapshot_pristine_config()
