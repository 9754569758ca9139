"""Numerical parity between a converted ppdet PicoDet and the ONNX file it came from.

Three checks, all on the same preprocessed tensor:

* ``compare_raw``: the 8 raw ONNX outputs (per level: sigmoid scores, DFL logits) against
  ``picodet_level_outputs`` of the dygraph model, plus decoded boxes: the ONNX logits
  decoded in numpy here vs ``picodet_raw_outputs`` (the export adapter).
* ``compare_per_conv``: every ONNX ``Conv`` output against the dygraph tensor at the same
  place (the conv output, after its identity BatchNorm where it has one) — this checks the
  mapping conv by conv, not only end to end.
* ``compare_paddle_inference``: an exported dense graph (Paddle Inference, CPU) against
  the dygraph adapter on keep-ratio, padded batches.
"""
from typing import Dict, List

import numpy as np

from ppdet_ext_deploy.compare import max_abs_diff

__all__ = ["preprocess_image", "onnx_level_outputs", "decode_dfl_numpy", "compare_raw",
           "compare_per_conv", "keep_ratio_batch", "compare_paddle_inference"]

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess_image(path, size, interp=None):
    """Read ``path`` and return ``[1, 3, S, S]`` float32 (RGB, plain resize, /255, ImageNet
    mean/std) — the preprocessing of the release-2.3 PicoDet export.

    ``interp`` defaults to ``cv2.INTER_LINEAR`` (ppdet ``Resize`` ``interp: 1``), which
    reproduces the reference AP of the ONNX files.
    """
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    interp = cv2.INTER_LINEAR if interp is None else interp
    rgb = cv2.resize(rgb, (size, size), interpolation=interp).astype(np.float32) / 255.0
    return ((rgb - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


def _session(onnx_path, extra_outputs=()):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    names = [o.name for o in model.graph.output]
    for name in extra_outputs:
        model.graph.output.append(onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3   # the export lists initializers as inputs: ORT warns per tensor
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess, names


def onnx_level_outputs(onnx_path, image, session=None):
    """The ONNX file's outputs on ``image`` ``[1, 3, S, S]``: (scores list, logits list)."""
    sess, names = session or _session(onnx_path)
    outs = sess.run(names, {"image": image})
    half = len(outs) // 2
    return outs[:half], outs[half:]


def decode_dfl_numpy(logits, sizes, strides, reg_max=7, cell_offset=0.5):
    """Decode per-level DFL logits ``[1, H*W, 4*(reg_max+1)]`` to xyxy ``[1, N, 4]`` px."""
    boxes = []
    for logit, (h, w), s in zip(logits, sizes, strides):
        x = logit.reshape(logit.shape[0], -1, 4, reg_max + 1).astype(np.float64)
        x = np.exp(x - x.max(-1, keepdims=True))
        dist = (x / x.sum(-1, keepdims=True)) @ np.arange(reg_max + 1) * s
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        c = np.stack([(xx.ravel() + cell_offset) * s, (yy.ravel() + cell_offset) * s], -1)
        boxes.append(np.concatenate([c - dist[..., :2], c + dist[..., 2:]], -1))
    return np.concatenate(boxes, 1).astype(np.float32)


def compare_raw(model, onnx_path, images: List[np.ndarray]) -> Dict[str, float]:
    """Max abs differences ONNX vs dygraph over ``images`` (each ``[1, 3, S, S]``).

    Returns:
        ``{"scores_l0".."scores_l3", "dfl_l0".."dfl_l3", "boxes_px", "scores_all"}``:
        maxima over all images.
    """
    import paddle

    from ppdet_ext.export.adapter_picodet import picodet_level_outputs, picodet_raw_outputs

    session = _session(onnx_path)
    diffs: Dict[str, float] = {}

    def upd(key, a, b):
        diffs[key] = max(diffs.get(key, 0.0), max_abs_diff(a, b))

    head = model.head
    for image in images:
        o_scores, o_logits = onnx_level_outputs(onnx_path, image, session)
        with paddle.no_grad():
            x = paddle.to_tensor(image)
            d_scores, d_logits, feats = picodet_level_outputs(model, x)
            scores, boxes = picodet_raw_outputs(model, x)
        for i, (a, b) in enumerate(zip(o_scores, d_scores)):
            upd(f"scores_l{i}", a, b.numpy())
        for i, (a, b) in enumerate(zip(o_logits, d_logits)):
            upd(f"dfl_l{i}", a, b.numpy())
        sizes = [tuple(f.shape[2:]) for f in feats]
        o_boxes = decode_dfl_numpy(o_logits, sizes, head.fpn_stride, head.reg_max,
                                   head.cell_offset)
        upd("boxes_px", o_boxes, boxes.numpy())
        upd("scores_all", np.concatenate(o_scores, 1), scores.numpy())
    return diffs


def compare_per_conv(model, onnx_path, image, slots) -> List[tuple]:
    """Per ONNX Conv in graph order: ``(max abs diff, max abs ONNX value)`` between the
    ONNX conv output and the dygraph tensor at the mapped place (after the identity BN
    where there is one).

    Args:
        slots: ``trace_conv_slots(model)`` (same order as the ONNX convs).
    """
    import paddle

    from ppdet_ext.export.adapter_picodet import picodet_level_outputs

    from .onnx_convs import read_onnx_convs

    convs = read_onnx_convs(onnx_path)
    sess, names = _session(onnx_path, [c.output for c in convs])
    ref = sess.run([c.output for c in convs], {"image": image})
    got, hooks = {}, []
    for k, slot in enumerate(slots):
        layer = slot.bn if slot.bn is not None else slot.conv

        def hook(layer, inputs, output, k=k):
            got[k] = output.numpy()
        hooks.append(layer.register_forward_post_hook(hook))
    try:
        with paddle.no_grad():
            picodet_level_outputs(model, paddle.to_tensor(image))
    finally:
        for h in hooks:
            h.remove()
    return [(max_abs_diff(got[k], ref[k]), float(np.abs(ref[k]).max())) for k in range(len(convs))]


def keep_ratio_batch(paths, target=(416, 704), stride=32, interp=None):
    """Preprocess ``paths`` with keep-ratio resize (short side ``target[0]``, long side at
    most ``target[1]``), normalize, and zero-pad them bottom/right into one
    ``[B, 3, H, W]`` batch, H and W multiples of ``stride``."""
    import cv2

    interp = cv2.INTER_LINEAR if interp is None else interp
    ims = []
    for p in paths:
        rgb = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        s = min(target[0] / min(h, w), target[1] / max(h, w))
        rgb = cv2.resize(rgb, None, fx=s, fy=s, interpolation=interp).astype(np.float32)
        ims.append(((rgb / 255.0 - MEAN) / STD).transpose(2, 0, 1))
    hh = max(-(-im.shape[1] // stride) * stride for im in ims)
    ww = max(-(-im.shape[2] // stride) * stride for im in ims)
    batch = np.zeros((len(ims), 3, hh, ww), np.float32)
    for k, im in enumerate(ims):
        batch[k, :, :im.shape[1], :im.shape[2]] = im
    return batch


def compare_paddle_inference(export_dir, model, batches, *, threads=2, mkldnn=False):
    """Max abs diff of an exported dense model (Paddle Inference, CPU) vs dygraph.

    ``matmul_v2_scale_fuse_pass`` is deleted (it computes wrong DFL boxes on Paddle
    2.6.2, docs/stack.md).

    Returns:
        ``{"scores": ..., "boxes_px": ...}`` maxima over ``batches``.
    """
    import paddle

    from ppdet_ext_deploy.backends.base import ShapeRange
    from ppdet_ext_deploy.formats import create_backend
    from ppdet_ext.export.adapter_picodet import picodet_raw_outputs

    # the deploy runner's own predictor (it deletes the broken pass as its last config step)
    backend = create_backend(export_dir, "paddle-cpu", {"threads": threads, "mkldnn": mkldnn})
    backend.prepare(ShapeRange.from_shapes([tuple(int(v) for v in (b.shape[0], *b.shape[2:]))
                                            for b in batches]))
    diffs = {"scores": 0.0, "boxes_px": 0.0}
    for batch in batches:
        got = backend.infer(batch)
        with paddle.no_grad():
            ref = [t.numpy() for t in picodet_raw_outputs(model, paddle.to_tensor(batch))]
        for key, a, b in zip(("scores", "boxes_px"), got, ref):
            if a.shape != b.shape:
                raise ValueError(f"{key}: exported shape {a.shape} != dygraph {b.shape}")
            diffs[key] = max(diffs[key], max_abs_diff(a, b))
    backend.close()
    return diffs
