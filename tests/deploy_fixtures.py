"""Fixture builders for deploy tests: tiny exported models that follow docs/export_format.md.

* :func:`build_tiny_export` — a seeded tiny conv detector (strides 8/16/32, dense outputs
  ``scores [B, N, C]`` + ``boxes [B, N, 4]`` xyxy in input pixels), saved with
  ``paddle.jit.to_static(full_graph=True)`` + ``paddle.jit.save`` with a dynamic
  ``[-1, 3, -1, -1]`` input, plus a hand-written ``infer_cfg.yml``; optionally ``model.onnx``.
* :func:`build_picodet_onnx_export` — the real COCO PicoDet-S ONNX from ``../shared/data``
  wrapped into the contract: the DFL decode (softmax-expected distance x stride from cell
  centres) appended as ONNX nodes, fixed ``[1, 3, 416, 416]``, plain resize. Real accuracy
  for the onnxruntime backend and for checking NMS/AP code against the known AP 0.335.
* :func:`write_bad_images` — the bad-input zoo.

Import this only from tests/tools: it imports paddle (after zlib, via ``deploy``).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import ppdet_ext_deploy  # noqa: F401  (imports zlib before paddle)
import cv2
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet_ext_deploy.imageio import list_images
from ppdet_ext_deploy.meta import write_meta

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
COCO_MINI = os.path.join(REPO, "dataset", "coco_mini")
PICODET_ONNX = os.path.join(SHARED_DATA, "models", "picodet_s_416_coco.onnx")
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


class TinyDense(nn.Layer):
    """Stride-8/16/32 anchor-free toy detector with dense outputs (the export contract).

    Returns ``scores [B, N, C]`` (sigmoid) and ``boxes [B, N, 4]`` xyxy in input pixels,
    ``N = sum(ceil(H/s) * ceil(W/s))``; H and W may be any size.
    """

    def __init__(self, num_classes: int = 4, width: int = 8):
        super().__init__()
        c = width
        # Bias-free convs + ReLU (no BatchNorm): zero padding stays exactly zero through every
        # layer, just like a conv's own zero padding, so detections inside an image do not
        # depend on how much padding its batch adds. That makes bs>1 == bs=1 checkable to
        # float rounding; real models (BN shifts, biases) get a looser, stated tolerance.
        def conv(i, o):
            return nn.Conv2D(i, o, 3, 2, 1, bias_attr=False)

        self.stem = nn.Sequential(conv(3, c), nn.ReLU(), conv(c, c), nn.ReLU(), conv(c, c), nn.ReLU())
        self.down = nn.LayerList([nn.Sequential(conv(c, c), nn.ReLU()) for _ in range(2)])
        self.cls = nn.Conv2D(c, num_classes, 1,
                             bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(-3.0)))
        self.reg = nn.Conv2D(c, 2, 1)  # half width/height: box centre == anchor centre
        self.strides = (8, 16, 32)

    def forward(self, image):
        feats = [self.stem(image)]
        for d in self.down:
            feats.append(d(feats[-1]))
        all_scores, all_boxes = [], []
        for f, s in zip(feats, self.strides):
            shp = paddle.shape(f)
            h, w = shp[2], shp[3]
            scores = F.sigmoid(self.cls(f)).flatten(2).transpose([0, 2, 1])     # [B, hw, C]
            dist = (F.softplus(self.reg(f)) * (2.0 * s)).flatten(2).transpose([0, 2, 1])
            ys = (paddle.arange(h, dtype="float32") + 0.5) * s
            xs = (paddle.arange(w, dtype="float32") + 0.5) * s
            gy, gx = paddle.meshgrid(ys, xs)
            ctr = paddle.stack([gx.flatten(), gy.flatten()], axis=-1).unsqueeze(0)  # [1, hw, 2]
            boxes = paddle.concat([ctr - dist, ctr + dist], axis=-1)
            all_scores.append(scores)
            all_boxes.append(boxes)
        return paddle.concat(all_scores, axis=1), paddle.concat(all_boxes, axis=1)


def tiny_layer(num_classes: int = 4, width: int = 8, seed: int = 0) -> TinyDense:
    """A seeded :class:`TinyDense` in eval mode."""
    paddle.seed(seed)
    layer = TinyDense(num_classes, width)
    layer.eval()
    return layer


def build_tiny_export(out_dir: str, *, num_classes: int = 4, width: int = 8, seed: int = 0,
                      target_size: Sequence[int] = (160, 256), keep_ratio: bool = True,
                      pad_stride: int = 32, post: Optional[Dict] = None, onnx: bool = False) -> str:
    """Write a tiny dense-output export dir; returns ``out_dir``.

    ``post`` overrides ``Postprocess`` (default: nms, score 0.5, IoU 0.6, keep 100).
    """
    os.makedirs(out_dir, exist_ok=True)
    layer = tiny_layer(num_classes, width, seed)
    spec = [paddle.static.InputSpec([-1, 3, -1, -1], "float32", "image")]
    static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
    paddle.jit.save(static, os.path.join(out_dir, "model"))
    onnx_file = os.path.join(out_dir, "model.onnx")
    if os.path.exists(onnx_file):
        os.remove(onnx_file)  # never leave a stale graph from an earlier build
    if onnx:
        import paddle2onnx

        paddle2onnx.export(os.path.join(out_dir, "model.pdmodel"),
                           os.path.join(out_dir, "model.pdiparams"),
                           save_file=onnx_file, opset_version=11,
                           enable_onnx_checker=True)
    cfg = {
        "arch": "TinyDense",
        "model_format": "paddle",
        "label_list": [f"c{i}" for i in range(num_classes)],
        "input_shape": [-1, 3, -1, -1],
        "Preprocess": [
            {"type": "Resize", "target_size": list(target_size), "keep_ratio": keep_ratio, "interp": 1},
            {"type": "NormalizeImage", "mean": MEAN, "std": STD, "is_scale": True},
            {"type": "Permute"},
        ],
        "pad_stride": pad_stride,
        "outputs": {"kind": "dense", "names": ["scores", "boxes"]},
        "Postprocess": post or {"type": "nms", "score_threshold": 0.5, "nms_threshold": 0.6,
                                "nms_top_k": 1000, "keep_top_k": 100, "class_agnostic": False},
    }
    write_meta(out_dir, cfg)
    return out_dir


def build_picodet_onnx_export(out_dir: str, onnx_path: str = PICODET_ONNX, size: int = 416,
                              interp: int = 1, score_threshold: float = 0.01) -> str:
    """Wrap the real PicoDet-S ONNX into the export contract (ORT backend, fixed 1x3xSxS)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(onnx_path)
    g = m.graph
    outs = [o.name for o in g.output]
    strides = (8, 16, 32, 64)
    cls_names, reg_names = outs[:4], outs[4:]
    proj = numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(8, 1), "dfl_proj")
    shape = numpy_helper.from_array(np.array([1, -1, 4, 8], np.int64), "dfl_shape")
    shape3 = numpy_helper.from_array(np.array([1, -1, 4], np.int64), "dfl_shape3")
    g.initializer.extend([proj, shape, shape3])
    box_names = []
    for s, reg in zip(strides, reg_names):
        n = -(-size // s)
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        ctr = np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], -1).astype(np.float32)
        g.initializer.extend([
            numpy_helper.from_array(np.concatenate([ctr, ctr], -1)[None], f"ctr{s}"),
            numpy_helper.from_array(np.array([-s, -s, s, s], np.float32), f"sgn{s}")])
        g.node.extend([
            helper.make_node("Reshape", [reg, "dfl_shape"], [f"r{s}"]),
            helper.make_node("Softmax", [f"r{s}"], [f"p{s}"], axis=3),
            helper.make_node("MatMul", [f"p{s}", "dfl_proj"], [f"d{s}"]),        # [1, N, 4, 1]
            helper.make_node("Reshape", [f"d{s}", "dfl_shape3"], [f"d3{s}"]),    # [1, N, 4]
            helper.make_node("Mul", [f"d3{s}", f"sgn{s}"], [f"o{s}"]),
            helper.make_node("Add", [f"o{s}", f"ctr{s}"], [f"b{s}"]),
        ])
        box_names.append(f"b{s}")
    g.node.extend([helper.make_node("Concat", cls_names, ["scores"], axis=1),
                   helper.make_node("Concat", box_names, ["boxes"], axis=1)])
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, None),
                     helper.make_tensor_value_info("boxes", onnx.TensorProto.FLOAT, None)])
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(m, os.path.join(out_dir, "model.onnx"))
    labels = coco_labels()
    write_meta(out_dir, {
        "arch": "PicoDet", "model_format": "onnx", "label_list": labels,
        "input_shape": [1, 3, size, size],
        "Preprocess": [
            {"type": "Resize", "target_size": [size, size], "keep_ratio": False, "interp": interp},
            {"type": "NormalizeImage", "mean": MEAN, "std": STD, "is_scale": True},
            {"type": "Permute"}],
        "pad_stride": 0,
        "outputs": {"kind": "dense", "names": ["scores", "boxes"]},
        "Postprocess": {"type": "nms", "score_threshold": score_threshold, "nms_threshold": 0.6,
                        "nms_top_k": 1000, "keep_top_k": 100, "class_agnostic": False},
    })
    return out_dir


def coco_labels() -> List[str]:
    """The 80 COCO class names in category-id order (from the repo's coco_mini annotations)."""
    import json

    with open(os.path.join(COCO_MINI, "annotations", "instances_val.json")) as f:
        cats = json.load(f)["categories"]
    return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]


def coco_mini_images(n: Optional[int] = None) -> List[str]:
    return list_images(os.path.join(COCO_MINI, "images"), n)


def write_bad_images(out_dir: str) -> Dict[str, str]:
    """Write the bad-input zoo; returns ``{kind: path}``.

    Kinds: ``corrupt`` (random bytes named .jpg), ``truncated`` (JPEG cut after 100 bytes),
    ``missing`` (path that does not exist), ``empty`` (0 bytes), ``tiny`` (1x1 PNG),
    ``huge`` (10000x10000 PNG, flat colour, small on disk), ``alpha`` (RGBA PNG),
    ``gray`` (grayscale PNG), ``deep`` (16-bit RGB PNG).
    """
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    p = {k: os.path.join(out_dir, f"{k}.{ext}") for k, ext in [
        ("corrupt", "jpg"), ("truncated", "jpg"), ("missing", "jpg"), ("empty", "png"),
        ("tiny", "png"), ("huge", "png"), ("alpha", "png"), ("gray", "png"), ("deep", "png")]}
    with open(p["corrupt"], "wb") as f:
        f.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    img = (rng.random((120, 200, 3)) * 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", img)
    with open(p["truncated"], "wb") as f:
        f.write(enc.tobytes()[:100])
    open(p["empty"], "wb").close()
    cv2.imwrite(p["tiny"], np.full((1, 1, 3), 128, np.uint8))
    cv2.imwrite(p["huge"], np.full((10000, 10000), 90, np.uint8))
    rgba = np.concatenate([img, np.full((120, 200, 1), 128, np.uint8)], -1)
    cv2.imwrite(p["alpha"], rgba)
    cv2.imwrite(p["gray"], cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(p["deep"], img.astype(np.uint16) * 257)
    return p
