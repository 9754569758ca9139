"""Raw-output parity of one model across engines on the same inputs.

dygraph (``adapters.raw_outputs``) vs Paddle Inference vs ONNX Runtime vs the RKNN simulator,
all from one in-memory model exported once at a fixed ``[1, 3, H, W]`` (RKNN needs a fixed
shape), on real images preprocessed by ``deploy/preprocess.py`` (or seeded noise when no image
folder is given). Reports max-abs-diff of ``scores`` (probabilities) and ``boxes`` (pixels)
against dygraph, and of RKNN against ONNX Runtime.

For a model with an NPU/CPU split (``ppdet_ext/export/rknn_split.py``) the split pipeline on
ONNX Runtime is one more engine (``onnxruntime-split``), and RKNN runs the split.
"""
import os
import time

import numpy as np
import paddle

from ppdet_ext_deploy.compare import diff_named, query_order

from . import adapters
from .exporter import build_model, export_model
from .onnx_export import export_onnx

__all__ = ["parity_inputs", "run_parity"]


def parity_inputs(meta, image_dir=None, num=2, seed=0):
    """``[num, 3, H, W]`` float32 inputs for ``meta``'s fixed shape: real images (sorted,
    first ``num``) through the deploy preprocessing, else seeded noise."""
    from ppdet_ext_deploy.imageio import decode_rgb, list_images
    from ppdet_ext_deploy.preprocess import Preprocessor

    h, w = meta.fixed_hw
    x = np.zeros((num, 3, h, w), np.float32)
    if not image_dir:
        return np.random.RandomState(seed).randn(num, 3, h, w).astype(np.float32), []
    pre = Preprocessor(meta.preprocess)
    paths = list_images(image_dir, num)
    for i, path in enumerate(paths):
        img, _ = decode_rgb(path)
        rh, rw = pre.resized_hw(*img.shape[:2])
        if rh > h or rw > w:  # keep-ratio resize larger than the fixed graph: shrink to fit
            s = min(h / rh, w / rw)
            rh, rw = min(h, int(round(rh * s))), min(w, int(round(rw * s)))
        x[i, :, :rh, :rw] = pre.apply(img, (rh, rw))
    return x, [os.path.basename(p) for p in paths]


def _diff(got, ref, match_queries=False):
    """Max-abs-diff of ``[scores, boxes]``; with ``match_queries`` the rows of ``got`` are first
    paired with the rows of ``ref`` by box distance (``compare.query_order``), per image:
    DETR outputs are a set, and two queries whose selection scores are within float noise can
    swap places between engines. ``reordered_queries`` counts the rows that moved."""
    got = [np.asarray(t) for t in got[:2]]
    moved = None
    if match_queries:
        order = query_order(got[1], ref[1])
        moved = int((order != np.arange(order.shape[1])).sum())
        got = [np.take_along_axis(t, order[..., None], axis=1) for t in got]
    out = diff_named(got, ref, ("scores", "boxes"))
    if moved is not None:
        out["reordered_queries"] = moved
    return out


def _export(cfg, work_dir, model, input_shape, split):
    if split:
        from .rknn_split import export_rtdetr_split
        export_rtdetr_split(cfg, work_dir, model=model, input_shape=input_shape)
    else:
        export_model(cfg, work_dir, model=model, input_shape=list(input_shape), batch_size=1)
        export_onnx(work_dir)


def _engine_outputs(work_dir, meta, x, split):
    """``{engine: [scores, boxes]}`` of Paddle Inference, ONNX Runtime (and the split)."""
    from ppdet_ext_deploy.formats import create_backend

    engines = {}
    for name in ("paddle-cpu", "onnxruntime"):
        b = create_backend(work_dir, name, {"threads": 1}, meta)
        per_image = [b.infer(x[i:i + 1]) for i in range(len(x))]  # the graphs have batch 1
        engines[name] = [np.concatenate(o, 0) for o in zip(*per_image)]
        b.close()
    if split:
        from ppdet_ext_deploy.rknn.split import onnxruntime_split_pipeline
        engines["onnxruntime-split"] = onnxruntime_split_pipeline(work_dir)(x)
    return engines


def _run_rknn(work_dir, meta, x, rknn_options, result, log):
    """RKNN simulator (fp16) outputs, or ``None`` with a note when it cannot run."""
    from ppdet_ext_deploy.formats import FormatUnavailable, check_available, create_backend, get_format

    try:
        check_available(get_format("rknn-sim"), work_dir)
        t = time.perf_counter()
        b = create_backend(work_dir, "rknn-sim", dict(rknn_options or {}), meta)
        out = b.infer(x)
        result["rknn_ops"] = b.ops
        result["rknn_build_and_run_s"] = time.perf_counter() - t
        b.close()
        return out
    except FormatUnavailable as e:
        result["notes"].append(f"rknn skipped: {e}")
    except RuntimeError as e:  # a build rknn-toolkit2 rejects is a result, not a crash
        result["notes"].append(f"rknn build failed: {str(e).splitlines()[0]}")
        log(f"rknn build failed: {e}")
    return None


def _detections_vs_dygraph(meta, engines, ref, n, log):
    """DETR: what a user gets, the post-processed detections of each engine vs dygraph."""
    from ppdet_ext_deploy.compare import Tolerance, match_images
    from ppdet_ext_deploy.postprocess import postprocess_batch

    tol = Tolerance(min_score=0.3, score_tol=0.05, iou_min=0.9, margin=0.02)
    hw = [tuple(meta.fixed_hw)] * n

    def dets(out):
        return postprocess_batch(out, meta.output_names, meta.post, [(1.0, 1.0)] * n, hw)

    ref_dets = dets(ref)
    result = {"tolerance": vars(tol)}
    for name, out in engines.items():
        rep = match_images(dets(out), ref_dets, tol)
        result[name] = rep.as_dict()
        log(f"{name:>18} detections >= 0.3: {rep.compared} compared, {rep.unmatched} "
            f"unmatched, max score diff {rep.max_score_diff:.3g}, min IoU {rep.min_iou:.4f}")
    return result


def run_parity(cfg, work_dir, *, weights=None, input_shape=(320, 320), image_dir=None,
               num_images=2, split=False, rknn=True, rknn_options=None, match_queries=False,
               log=print):
    """Export ``cfg``'s model once and compare engines on the same inputs.

    Args:
        cfg: merged config.
        work_dir: export directory to (re)write.
        weights: checkpoint, or ``None`` for the seeded random init.
        input_shape: ``(H, W)`` of the fixed graph.
        image_dir: images to feed (``None``: noise).
        split: export the RT-DETR NPU/CPU split (``export_rtdetr_split``).
        rknn: also run the RKNN simulator (fp16) when rknn-toolkit2 is available.
        rknn_options: extra ``rknn-sim`` options.
        match_queries: DETR: pair queries by box before diffing (see :func:`_diff`).

    Returns:
        dict with per-engine ``vs_dygraph`` diffs, ``rknn_vs_onnxruntime``, shapes, timings.
    """
    from ppdet_ext_deploy.meta import load_meta

    paddle.seed(0)
    model = build_model(cfg, weights)
    _export(cfg, work_dir, model, input_shape, split)
    meta = load_meta(work_dir)
    x, files = parity_inputs(meta, image_dir, num_images)
    with paddle.no_grad():
        ref = [np.asarray(t.numpy()) for t in adapters.raw_outputs(model, paddle.to_tensor(x))]
    engines = _engine_outputs(work_dir, meta, x, split)
    result = {"inputs": files or f"noise {list(x.shape)}", "input_shape": list(x.shape),
              "weights": weights or "random init (paddle.seed(0))",
              "shapes": {"scores": list(ref[0].shape), "boxes": list(ref[1].shape)},
              "vs_dygraph": {}, "notes": []}
    rknn_out = _run_rknn(work_dir, meta, x, rknn_options, result, log) if rknn else None
    if rknn_out is not None:
        engines["rknn-sim-fp16"] = rknn_out
    for name, out in engines.items():
        d = result["vs_dygraph"][name] = _diff(out, ref, match_queries)
        log(f"{name:>18} vs dygraph: scores {d['scores']:.3g}  boxes {d['boxes']:.3g} px")
    if match_queries:
        result["detections_vs_dygraph"] = _detections_vs_dygraph(meta, engines, ref, len(x), log)
    if rknn_out is not None:
        result["rknn_vs_onnxruntime"] = _diff(rknn_out, engines["onnxruntime"], match_queries)
    if "onnxruntime-split" in engines:
        result["split_vs_unsplit_onnxruntime"] = _diff(engines["onnxruntime-split"],
                                                       engines["onnxruntime"])
    result["onnxruntime_vs_paddle_inference"] = _diff(engines["onnxruntime"], engines["paddle-cpu"],
                                                      match_queries)
    result["match_queries"] = bool(match_queries)
    return result
