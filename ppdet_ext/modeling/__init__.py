"""Model modules registered into ppdet (RT-DETRv2 lives in ppdet_ext.modeling.rtdetr)."""
from . import rtdetr  # noqa: F401
