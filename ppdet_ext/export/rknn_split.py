"""RKNN-friendly RT-DETRv2 export: two NPU graphs, top-k and post-processing on the CPU.

An RK NPU runs neither ``TopK`` nor ``GridSample``/``GatherND`` (they fall back to the CPU,
docs/stack.md), and shape arithmetic (``Shape``/``Range``) has no business there.
So the deploy forward of an ``ExtRTDETR`` (discrete sampling, ``convert_to_deploy()``) is cut
at the query selection, for a fixed ``[1, 3, H, W]`` input:

1. ``encoder.onnx`` (NPU): image -> ``enc_logits [1, C, L]``, ``out_memory [1, D, L]``,
   ``enc_coord [1, 4, L]`` (cxcywh logits, anchors added) and ``memory [1, D, L]``, all
   channels first (``encoder_layout: channels_first``: no layout transposes on the CPU of
   either graph); anchors are constants.
2. CPU (numpy, ``deploy.rknn.split.SplitPipeline``): the best class logit per token (the
   ``ReduceMax``, which RKNN runs on the CPU anyway), the top-``K`` tokens by it and their rows
   of ``out_memory`` / ``enc_coord`` (the query selection's ``TopK`` + row gather).
3. ``decoder.onnx`` (NPU): ``target [1, K, D]``, ``ref_unact [1, K, 4]``, ``memory [1, D, L]`` ->
   ``scores [1, K, C]`` (sigmoid), ``boxes [1, K, 4]`` xyxy input pixels — the dense outputs of
   docs/export_format.md. Discrete sampling in its gather-free form (one-hot ``MatMul``s,
   ``ExtMSDeformableAttention.set_gather_free``): RKNN runs no data-dependent ``Gather``,
   ``Floor``, float->int ``Cast`` or ``Log`` on the NPU, so the decoder has none of them.
4. CPU: the usual dense ``topk`` post-processing of ``deploy/postprocess.py``.

The export directory is a normal one (``model.pdmodel``, unsplit ``model.onnx``,
``infer_cfg.yml`` with a fixed ``input_shape``) plus ``encoder.onnx``, ``decoder.onnx`` and an
``rknn_split`` block in ``infer_cfg.yml``; the ``rknn-sim`` backend runs the split pipeline.
Every graph of the directory (the unsplit ones too) uses the gather-free sampling; the model
object is switched back afterwards.

The parts are the decoder's own public methods: ``encoder_outputs`` (everything before the
query selection) and ``decode_from_logits`` (the decoder layers carrying box logits instead of
the ``inverse_sigmoid(sigmoid(z))`` round trip: no ``Log``), so the split equals the unsplit
graph up to float rounding (~1e-7), not bit for bit. See docs/onnx_rknn.md.
"""
import os

import onnx
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.static import InputSpec

from ppdet_ext_deploy.meta import write_meta

from ..modeling.rtdetr.box_ops import cxcywh_to_xyxy
from .exporter import build_model, export_model
from .metadata import ExportError
from .onnx_export import DEFAULT_OPSET, export_onnx, fold_fixed_shape, paddle_to_onnx

__all__ = ["RTDETREncoderPart", "RTDETRDecoderPart", "export_rtdetr_split",
           "FORBIDDEN_NPU_OPS", "ENCODER_OUTPUTS", "DECODER_INPUTS"]

# Ops the NPU graphs must not contain (RKNN: CPU fallbacks / shape arithmetic)
FORBIDDEN_NPU_OPS = ("GridSample", "TopK", "GatherND", "Range", "NonMaxSuppression", "Shape")
ENCODER_OUTPUTS = ("enc_logits", "out_memory", "enc_coord", "memory")
DECODER_INPUTS = ("target", "ref_unact", "memory")


def _sampling_methods(model):
    return {m.method for m in model.sublayers() if hasattr(m, "method") and hasattr(m, "attend")}


def _set_gather_free(model, enable):
    """Switch every attention that can sample without Gather; returns ``{layer: previous}``."""
    return {m: m.set_gather_free(enable) for m in model.sublayers()
            if hasattr(m, "set_gather_free") and getattr(m, "method", None) == "discrete"}


def _features(model, image):
    """Neck maps ``[B, C_l, H_l, W_l]`` of ``image``: the architecture's backbone and neck."""
    return model.neck(model.backbone({"image": image}))


class RTDETREncoderPart(nn.Layer):
    """NPU part 1: backbone, hybrid encoder and the encoder heads, up to (not including) the
    top-k query selection. Fixed input size, so anchors are constants (no Range)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        memory, _, out_memory, enc_logits, enc_coord = \
            self.model.transformer.encoder_outputs(_features(self.model, image))
        # the CPU side takes max over classes + top-k (RKNN runs ReduceMax and TopK on the CPU);
        # channels first: RKNN transposes [1, L, 4] on the CPU (4 is not a multiple of 8), and
        # the decoder takes memory channels first as well (no transpose on either side)
        return tuple(t.transpose([0, 2, 1]) for t in (enc_logits, out_memory, enc_coord, memory))


class RTDETRDecoderPart(nn.Layer):
    """NPU part 2: the deformable decoder from the selected queries to dense outputs."""

    def __init__(self, model, spatial_shapes, input_hw):
        super().__init__()
        self.model = model
        self.spatial_shapes = [(int(h), int(w)) for h, w in spatial_shapes]
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))

    def forward(self, target, ref_unact, memory):
        """``target [1, K, D]``, ``ref_unact [1, K, 4]`` cxcywh logits, ``memory [1, D, L]``
        (channels first, as the encoder part writes it) -> ``scores [1, K, C]`` (sigmoid),
        ``boxes [1, K, 4]`` xyxy input pixels."""
        z, logits = self.model.transformer.decode_from_logits(
            target, ref_unact, memory.transpose([0, 2, 1]), self.spatial_shapes)
        h, w = self.input_hw
        whwh = paddle.to_tensor([w, h, w, h], dtype="float32")
        return F.sigmoid(logits), cxcywh_to_xyxy(F.sigmoid(z)) * whwh


def _save_part(layer, specs, path):
    static = paddle.jit.to_static(layer, input_spec=specs, full_graph=True)
    paddle.jit.save(static, path)


def _part_onnx(prefix, inputs, outputs, shapes, opset):
    model = paddle_to_onnx(prefix + ".pdmodel", prefix + ".pdiparams", opset=opset,
                           input_names=list(inputs), output_names=list(outputs))
    model = fold_fixed_shape(model, dict(zip(inputs, shapes)))
    onnx.checker.check_model(model)
    return model


def check_npu_graph(onnx_path):
    """Op types of ``onnx_path`` that must not be in an NPU graph (empty list = clean)."""
    m = onnx.load(onnx_path, load_external_data=False)
    return sorted({n.op_type for n in m.graph.node} & set(FORBIDDEN_NPU_OPS))


def export_rtdetr_split(cfg, output_dir, *, weights=None, model=None, input_shape=(640, 640),
                        opset=DEFAULT_OPSET, allow_grid_sample=False):
    """Export an RT-DETRv2 for RKNN: unsplit graph + ``encoder.onnx`` + ``decoder.onnx``.

    Args:
        cfg: merged config of an ``ExtRTDETR``.
        output_dir: export directory to write.
        weights: checkpoint (ignored when ``model`` is given).
        model: an already built model (``convert_to_deploy()`` is applied if not yet).
        input_shape: ``(H, W)``; the batch is 1.
        opset: ONNX opset.
        allow_grid_sample: export ``default`` (bilinear ``grid_sample``) sampling anyway
            (GridSample then runs on the CPU of an RKNN board; for comparisons only).

    Discrete sampling is exported in its gather-free form (``set_gather_free``) and the model
    is switched back on return, so its dygraph numerics stay those of training.

    Returns:
        dict: the ``infer_cfg.yml`` contents (with its ``rknn_split`` block).
    """
    model = model if model is not None else build_model(cfg, weights)
    model.eval()
    dec = getattr(model, "transformer", None)
    if dec is None or not hasattr(dec, "decode_from_logits"):
        raise ExportError(f"{type(model).__name__} is not an RT-DETR (no transformer with "
                          "query selection): the NPU/CPU split applies to RT-DETR only")
    methods = _sampling_methods(model)
    if methods != {"discrete"} and not allow_grid_sample:
        raise ExportError(f"sampling {sorted(methods)}: the RKNN split needs "
                          "ExtRTDETRDecoder.sampling_method: discrete (GridSample runs on the "
                          "CPU of an RK NPU); pass allow_grid_sample=True to export anyway")
    h, w = (int(v) for v in input_shape)
    previous = _set_gather_free(model, True)
    try:
        meta = _export_parts(cfg, output_dir, model, dec, (h, w), opset)
    finally:
        for m, state in previous.items():
            m.set_gather_free(state)
    meta["rknn_split"]["sampling"] = sorted(methods)
    meta["rknn_split"]["gather_free"] = bool(previous)
    write_meta(output_dir, meta)
    return meta


def _export_parts(cfg, output_dir, model, dec, hw, opset):
    """Unsplit export + both part graphs; returns the metadata with its ``rknn_split`` block."""
    h, w = hw
    meta = export_model(cfg, output_dir, model=model, input_shape=[h, w], batch_size=1)
    export_onnx(output_dir, opset=opset)

    with paddle.no_grad():
        shapes = dec.encoder_outputs(_features(model, paddle.zeros([1, 3, h, w], "float32")))[1]
    shapes = [(int(a), int(b)) for a, b in shapes]
    length = sum(a * b for a, b in shapes)
    dim, k = int(dec.hidden_dim), int(dec.num_queries)
    parts = os.path.join(output_dir, "split_paddle")
    _save_part(RTDETREncoderPart(model), [InputSpec([1, 3, h, w], "float32", "image")],
               os.path.join(parts, "encoder"))
    dec_shapes = [[1, k, dim], [1, k, 4], [1, dim, length]]
    _save_part(RTDETRDecoderPart(model, shapes, (h, w)),
               [InputSpec(s, "float32", n) for s, n in zip(dec_shapes, DECODER_INPUTS)],
               os.path.join(parts, "decoder"))
    enc = _part_onnx(os.path.join(parts, "encoder"), ["image"], ENCODER_OUTPUTS,
                     [[1, 3, h, w]], opset)
    dec_onnx = _part_onnx(os.path.join(parts, "decoder"), DECODER_INPUTS, ["scores", "boxes"],
                          dec_shapes, opset)
    onnx.save(enc, os.path.join(output_dir, "encoder.onnx"))
    onnx.save(dec_onnx, os.path.join(output_dir, "decoder.onnx"))
    meta["rknn_split"] = {
        "encoder": "encoder.onnx", "decoder": "decoder.onnx", "num_queries": k,
        "encoder_outputs": list(ENCODER_OUTPUTS), "decoder_inputs": list(DECODER_INPUTS),
        "decoder_input_shapes": dec_shapes, "spatial_shapes": [list(s) for s in shapes],
        "encoder_layout": "channels_first",
    }
    return meta
