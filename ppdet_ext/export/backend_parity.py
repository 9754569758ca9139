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


def _diff(a, b, match_queries=False):
    """Max-abs-diff of ``[scores, boxes]``; with ``match_queries`` the rows of ``a`` are first
    paired with the rows of ``b`` by box distance (Hungarian), per image.

    DETR outputs are a *set*: two queries whose selection scores are within float noise can
    swap places between engines, which a row-by-row diff reports as a wrong box. Matching
    compares each query with its counterpart; ``reordered`` counts rows that moved."""
    sa, ba = np.asarray(a[0]), np.asarray(a[1])
    sb, bb = np.asarray(b[0]), np.asarray(b[1])
    moved = 0
    if match_queries:
        from scipy.optimize import linear_sum_assignment

        sa, ba = sa.copy(), ba.copy()
        for i in range(ba.shape[0]):
            cost = np.abs(ba[i][:, None, :] - bb[i][None, :, :]).sum(-1)
            rows, cols = linear_sum_assignment(cost)
            order = rows[np.argsort(cols)]
            moved += int((order != np.arange(len(order))).sum())
            sa[i], ba[i] = sa[i][order], ba[i][order]
    out = {"scores": float(np.abs(sa - sb).max()), "boxes": float(np.abs(ba - bb).max())}
    if match_queries:
        out["reordered_queries"] = moved
    return out


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
    from ppdet_ext_deploy.formats import FormatUnavailable, check_available, create_backend, get_format
    from ppdet_ext_deploy.meta import load_meta

    paddle.seed(0)
    model = build_model(cfg, weights)
    if split:
        from .rknn_split import export_rtdetr_split
        export_rtdetr_split(cfg, work_dir, model=model, input_shape=input_shape)
    else:
        export_model(cfg, work_dir, model=model, input_shape=list(input_shape), batch_size=1)
        export_onnx(work_dir)
    meta = load_meta(work_dir)
    x, files = parity_inputs(meta, image_dir, num_images)
    with paddle.no_grad():
        ref = [np.asarray(t.numpy()) for t in adapters.raw_outputs(model, paddle.to_tensor(x))]
    engines = {}
    for name, opts in (("paddle-cpu", {"threads": 1}), ("onnxruntime", {"threads": 1})):
        b = create_backend(work_dir, name, opts, meta)
        per_image = [b.infer(x[i:i + 1]) for i in range(len(x))]  # the graphs have batch 1
        engines[name] = [np.concatenate(o, 0) for o in zip(*per_image)]
        b.close()
    if split:
        from ppdet_ext_deploy.rknn.split import onnxruntime_split_pipeline
        engines["onnxruntime-split"] = onnxruntime_split_pipeline(work_dir)(x)
    result = {"inputs": files or f"noise {list(x.shape)}", "input_shape": list(x.shape),
              "weights": weights or "random init (paddle.seed(0))",
              "shapes": {"scores": list(ref[0].shape), "boxes": list(ref[1].shape)},
              "vs_dygraph": {}, "notes": []}
    if rknn:
        try:
            check_available(get_format("rknn-sim"), work_dir)
            t = time.perf_counter()
            b = create_backend(work_dir, "rknn-sim", dict(rknn_options or {}), meta)
            engines["rknn-sim-fp16"] = b.infer(x)
            result["rknn_ops"] = b.ops
            result["rknn_build_and_run_s"] = time.perf_counter() - t
            b.close()
        except FormatUnavailable as e:
            result["notes"].append(f"rknn skipped: {e}")
        except RuntimeError as e:  # a build rknn-toolkit2 rejects is a result, not a crash
            result["notes"].append(f"rknn build failed: {str(e).splitlines()[0]}")
            log(f"rknn build failed: {e}")
    for name, out in engines.items():
        result["vs_dygraph"][name] = _diff(out, ref, match_queries)
        log(f"{name:>18} vs dygraph: scores {result['vs_dygraph'][name]['scores']:.3g}  "
            f"boxes {result['vs_dygraph'][name]['boxes']:.3g} px")
    if match_queries:  # DETR: also compare what a user gets, the post-processed detections
        from ppdet_ext_deploy.compare import Tolerance, match_detections
        from ppdet_ext_deploy.postprocess import postprocess_batch

        tol = Tolerance(min_score=0.3, score_tol=0.05, iou_min=0.9, margin=0.02)
        n = len(x)
        hw = [tuple(meta.fixed_hw)] * n

        def dets(out):
            return postprocess_batch(out, meta.output_names, meta.post, [(1.0, 1.0)] * n, hw)

        ref_dets = dets(ref)
        result["detections_vs_dygraph"] = {"tolerance": vars(tol)}
        for name, out in engines.items():
            rep = None
            for a, b in zip(dets(out), ref_dets):
                m = match_detections(a, b, tol)
                rep = m if rep is None else rep.merge(m)
            result["detections_vs_dygraph"][name] = {
                "compared": rep.compared, "unmatched": rep.unmatched,
                "max_score_diff": rep.max_score_diff, "min_iou": rep.min_iou}
            log(f"{name:>18} detections >= 0.3: {rep.compared} compared, {rep.unmatched} "
                f"unmatched, max score diff {rep.max_score_diff:.3g}, min IoU {rep.min_iou:.4f}")
    if "rknn-sim-fp16" in engines:
        result["rknn_vs_onnxruntime"] = _diff(engines["rknn-sim-fp16"], engines["onnxruntime"],
                                              match_queries)
    if "onnxruntime-split" in engines:
        result["split_vs_unsplit_onnxruntime"] = _diff(engines["onnxruntime-split"],
                                                       engines["onnxruntime"])
    result["onnxruntime_vs_paddle_inference"] = _diff(engines["onnxruntime"], engines["paddle-cpu"],
                                                      match_queries)
    result["match_queries"] = bool(match_queries)
    return result
