"""ONNX Runtime static INT8 (QDQ) of an export directory's ``model.onnx``.

``onnxruntime.quantization.quantize_static`` with a calibration reader fed by the same
preprocessing as the deploy runner. Defaults: QDQ format, per-channel INT8 weights, UINT8
activations (ORT's fast u8s8 path on x86 without VNNI), only ``Conv`` quantized (the DFL
``MatMul`` against a constant 1-D projection stays float, like the Paddle PTQ). Sensitive
layers are kept float by Paddle weight name: paddle2onnx keeps parameter names as ONNX
tensor names, so the Conv whose weight input is ``conv2d_1.w_0`` is excluded.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence

from ppdet_ext_deploy.meta import copy_meta, load_meta


CALIB_METHODS = ("minmax", "entropy", "percentile")


def _reader(meta, files, input_name):
    from onnxruntime.quantization import CalibrationDataReader

    from .calib import calib_batches

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calib_batches(meta, files))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    return _Reader()


def conv_nodes_by_weight(onnx_path: str) -> Dict[str, str]:
    """``{weight tensor name: Conv node name}`` (paddle2onnx 1.3.1 writes weights as
    ``Constant`` nodes or initializers, both named like the Paddle parameter)."""
    import onnx

    return _conv_nodes(onnx.load(onnx_path, load_external_data=False).graph)


def _conv_nodes(graph) -> Dict[str, str]:
    return {n.input[1]: n.name for n in graph.node if n.op_type == "Conv" and len(n.input) > 1}


def constants_to_initializers(model):
    """Move every tensor-valued ``Constant`` node into ``graph.initializer`` (in place).

    paddle2onnx 1.3.1 writes the conv weights and folded-BN biases as ``Constant`` nodes.
    ORT's quantizer only treats *initializers* as weights: a ``Constant`` weight is quantized
    like an activation (one calibrated per-tensor UINT8 scale for the whole kernel, no
    per-channel scales), which wrecks depthwise convs after BN folding. Same graph, same
    values, so the FP32 outputs are unchanged.

    Returns:
        int: number of constants moved.
    """
    from onnx import numpy_helper

    keep, moved = [], 0
    for node in model.graph.node:
        attr = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and set(attr) == {"value"}:
            t = numpy_helper.to_array(attr["value"].t)
            model.graph.initializer.append(numpy_helper.from_array(t, name=node.output[0]))
            moved += 1
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return moved


def quantize_onnx_export(model_dir: str, out_dir: str, calib_files: Sequence[str], *,
                         method: str = "minmax", skip_layers: Sequence[str] = (),
                         per_channel: bool = True, activation_uint8: bool = True,
                         op_types: Sequence[str] = ("Conv",),
                         quantize_outputs: bool = False) -> Dict[str, Any]:
    """Write ``out_dir/model.onnx`` (QDQ INT8) + ``infer_cfg.yml`` from ``model_dir``.

    Args:
        model_dir: Export directory holding ``model.onnx`` (tools/export_onnx.py).
        calib_files: Calibration images.
        method: ORT calibration: ``minmax`` | ``entropy`` | ``percentile``.
        skip_layers: Paddle weight names (``conv2d_1.w_0``) of convs to keep in float.
        quantize_outputs: Also quantize Conv outputs, so ORT can fuse ``DQ -> Conv -> Q``
            into integer ``QLinearConv`` kernels (faster). Off: only Conv inputs and weights
            are quantized and the convs run in float on dequantized values (accuracy of the
            skip-list exactly as simulated, no speed-up).
    """
    if method not in CALIB_METHODS:
        raise ValueError(f"method must be one of {CALIB_METHODS}")
    src = os.path.join(model_dir, "model.onnx")
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src} missing: run tools/export_onnx.py --model {model_dir} first")
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    pre = _float_model(src, per_channel)
    by_w = _conv_nodes(pre.graph)
    unknown = sorted(set(skip_layers) - set(by_w))
    if unknown:
        raise ValueError(f"skip_layers not found as Conv weights in {src}: {unknown}")
    # onnxruntime 1.19 sets a [0, 1] range on every Softmax output in adjust_tensor_ranges()
    # and raises "Only an existing tensor can be modified" when Softmax was not calibrated:
    # calibrate Softmax too, then exclude those nodes so they stay float.
    softmax = [n.name for n in pre.graph.node if n.op_type == "Softmax"]
    types = list(op_types) + (["Softmax"] if softmax and "Softmax" not in op_types else [])
    exclude = [by_w[w] for w in skip_layers] + ([] if "Softmax" in op_types else softmax)
    _quantize(pre, os.path.join(out_dir, "model.onnx"), load_meta(model_dir), calib_files,
              method=method, types=types, exclude=exclude, per_channel=per_channel,
              activation_uint8=activation_uint8, quantize_outputs=quantize_outputs)
    info = {"method": "ptq", "engine": "onnxruntime.quantization.quantize_static (QDQ)",
            "calibrate_method": method, "calib_images": len(calib_files),
            "per_channel": per_channel, "activation": "uint8" if activation_uint8 else "int8",
            "skip_layers": list(skip_layers), "quantize_outputs": quantize_outputs,
            "seconds": round(time.perf_counter() - t0, 1)}
    copy_meta(model_dir, out_dir, quantization=info)
    return info


def _float_model(src, per_channel):
    """``src`` loaded with its Constant weights as initializers, at opset >= 13 when
    per-channel (ORT: per-channel QDQ needs it). ORT's optional ``quant_pre_process`` is not
    used: its optimizer renames the Conv weights that skip-lists refer to."""
    import onnx

    pre = onnx.load(src)
    constants_to_initializers(pre)
    opset = max((o.version for o in pre.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if per_channel and opset < 13:
        from onnx import version_converter
        pre = version_converter.convert_version(pre, 13)
    return pre


def _quantize(pre, dst, meta, calib_files, *, method, types, exclude, per_channel,
              activation_uint8, quantize_outputs):
    """``quantize_static`` of the in-memory model ``pre`` into ``dst`` (QDQ)."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    pre_path = os.path.join(os.path.dirname(dst), "model.fp32_initializers.onnx")
    onnx.save(pre, pre_path)
    try:
        quantize_static(pre_path, dst, _reader(meta, list(calib_files), pre.graph.input[0].name),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=types,
                        per_channel=per_channel,
                        activation_type=QuantType.QUInt8 if activation_uint8 else QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=cm,
                        nodes_to_exclude=exclude,
                        # quantize Conv inputs + weights only, as Paddle's PTQ and our
                        # sensitivity analysis do: a Conv *output* QDQ re-quantizes the tensor
                        # a skipped layer reads, so a skip-list would not keep that layer float
                        # DedicatedQDQPair: a tensor read by a quantized and a skipped conv
                        # gets one Q/DQ pair per consumer, so the skipped one really reads float
                        extra_options={"OpTypesToExcludeOutputQuantization":
                                       [] if quantize_outputs else ["Conv"],
                                       "DedicatedQDQPair": True})
    finally:
        os.remove(pre_path)
