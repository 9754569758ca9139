"""Convert released detector files into ppdet dygraph weights.

``picodet_onnx``: a Paddle-exported PicoDet ONNX file (BatchNorm folded into convs) ->
ppdet 2.6.0 ``PicoDet`` weights; ``parity``: ONNX-vs-dygraph checks for it.
``rtdetrv2_weights``: rtdetrv2_pytorch ``.pth`` / PaddleDetection develop ``.pdparams``
RT-DETRv2 checkpoints -> ``ExtRTDETR`` weights (``tools/convert_weights.py``).
Importing this package does not import onnx/onnxruntime; the functions do, when called.
"""
from .onnx_convs import OnnxConv, onnx_input_hw, read_onnx_convs  # noqa: F401
from .picodet_onnx import (  # noqa: F401
    ConvSlot, MappingReport, build_model, convert_picodet_onnx, identity_bn_variance,
    load_folded_weights, map_convs, save_weights, trace_conv_slots)
from .rtdetrv2_weights import convert_rtdetrv2, read_rtdetrv2_checkpoint  # noqa: F401
from .weight_report import ConversionReport  # noqa: F401
