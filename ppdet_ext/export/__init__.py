"""Export to static graphs with NMS-free raw outputs (docs/export_format.md)."""
from . import adapters  # noqa: F401
from . import adapter_gfl  # noqa: F401  (registers GFL)
from .exporter import build_model, export_model, resolve_input_shape  # noqa: F401
from .metadata import ExportError  # noqa: F401

try:  # written alongside the PicoDet weight converter
    from . import adapter_picodet  # noqa: F401
except ImportError as e:  # pragma: no cover - only while that module is absent
    if "adapter_picodet" not in str(e):
        raise
