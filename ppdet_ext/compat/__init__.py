"""Compatibility fixes for the pinned stack (Paddle 2.6.2 + paddledet 2.6.0).

Each fix lives in its own module, names the failure it fixes in its docstring, and has a
test in ``tests/test_compat.py`` that reproduces the failure without the fix.
No file in site-packages is edited.
"""
from . import zlib_first  # noqa: F401  (must run before anything imports paddle)

APPLIED = ["zlib_first"]
