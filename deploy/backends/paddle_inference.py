"""Paddle Inference: CPU (optionally oneDNN), GPU, and TensorRT FP32/FP16/INT8 subgraphs.

The rows of ``deploy/formats.py`` fix ``device`` and ``trt_precision``; the user sets the rest.

TensorRT needs every input shape inside one dynamic-shape profile, set before the predictor
is built. The runner calls :meth:`prepare` with a :class:`ShapeRange` computed from the batch
plan (min/opt/max over the exact shapes the run feeds), so a 1333-px input is never outside a
silently capped range; if a later run needs a wider range the predictor is rebuilt.

This repository's pinned ``paddlepaddle`` 2.6.2 wheel is CPU-only: the GPU/TRT paths are
complete but refuse to start there, with a message saying so (checked in ``formats.py``).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..backends.base import Backend, ShapeRange
from ..meta import ExportMeta

log = logging.getLogger(__name__)

# Paddle Inference CPU on 2.6.2 fuses matmul_v2 + scale wrongly and returns wrong GFL boxes
# (the Integral/DFL projection); deleting the pass fixes it (docs/stack.md).
BROKEN_PASSES = ("matmul_v2_scale_fuse_pass",)
_PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_INT8_OPS = ("conv2d", "depthwise_conv2d", "fused_conv2d")


class PaddleInferenceBackend(Backend):
    """``paddle.inference`` predictor over ``model.pdmodel`` / ``model.pdiparams``.

    Args:
        meta: Export metadata.
        device: ``cpu`` or ``gpu``.
        trt_precision: ``None`` (no TensorRT) or ``fp32`` | ``fp16`` | ``int8``.
        threads: CPU math threads (cpu only; ``0`` = all cores).
        mkldnn: Use oneDNN kernels (cpu only).
        mkldnn_cache: oneDNN per-shape primitive cache capacity (0 = unbounded).
        mkldnn_int8: Run a quantized graph's ``quantize_linear``/``dequantize_linear`` pairs
            as oneDNN INT8 kernels (``enable_mkldnn_int8``); without it Paddle 2.6 runs them
            as float fake-quant ops, slower than FP32. Needs ``mkldnn``.
        int8_ops: Op types oneDNN may run in INT8 (``enable_mkldnn_int8(ops)``). Default:
            the convs our PTQ calibrates, named as the INT8 pass sees them *after* oneDNN's
            conv+bias+activation fusion (``fused_conv2d``; without it most convs silently
            stay float). Paddle's own default (empty set = every op its INT8 pass supports)
            also requantizes pool2d / concat / split / interp outputs with scales borrowed
            from neighbouring tensors: PicoDet-S 0.282 AP instead of 0.311 (top-8 float,
            docs/quantization.md).
        gpu_id, gpu_mem_mb: GPU device and initial memory pool.
        workspace_mb, min_subgraph_size, use_static, trt_cache_dir: TensorRT build settings
            (``use_static`` serialises engines into ``trt_cache_dir``).
        calib_dir: INT8 only: folder of representative images run once through the predictor
            in calibration mode before timing (Paddle-TRT collects the calibration table).
        calib_images: How many of those images to use.
    """

    def __init__(self, meta: ExportMeta, *, device: str = "cpu", trt_precision: Optional[str] = None,
                 threads: int = 0, mkldnn: bool = True, mkldnn_cache: int = 0,
                 mkldnn_int8: bool = False, int8_ops: Sequence[str] = DEFAULT_INT8_OPS,
                 gpu_id: int = 0,
                 gpu_mem_mb: int = 1000, workspace_mb: int = 1024, min_subgraph_size: int = 3,
                 use_static: bool = False, trt_cache_dir: Optional[str] = None,
                 calib_dir: Optional[str] = None, calib_images: int = 32):
        super().__init__(meta)
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        if trt_precision is not None and trt_precision not in _PRECISIONS:
            raise ValueError(f"trt_precision must be one of {_PRECISIONS}, got {trt_precision!r}")
        if trt_precision is not None and device != "gpu":
            raise ValueError("TensorRT runs on the GPU: device must be 'gpu'")
        if mkldnn_int8 and not (device == "cpu" and mkldnn):
            raise ValueError("mkldnn_int8 needs device='cpu' and mkldnn=True")
        if trt_precision == "int8" and not calib_dir:
            raise ValueError("paddle-trt-int8 needs calib_dir=<folder of representative images>")
        self.device = device
        self.trt_precision = trt_precision
        self.threads = int(threads) or (os.cpu_count() or 1)
        self.mkldnn = bool(mkldnn)
        self.mkldnn_cache = int(mkldnn_cache)
        self.mkldnn_int8 = bool(mkldnn_int8)
        self.int8_ops = sorted(set(int8_ops))
        self.gpu_id, self.gpu_mem_mb = int(gpu_id), int(gpu_mem_mb)
        self.workspace_mb, self.min_subgraph_size = int(workspace_mb), int(min_subgraph_size)
        self.use_static = bool(use_static)
        self.trt_cache_dir = trt_cache_dir
        self.calib_dir, self.calib_images = calib_dir, int(calib_images)
        self._range: Optional[ShapeRange] = None
        self._predictor = None
        self._inputs = None
        self._outputs = None
        if trt_precision is None:
            self._build()  # shape-agnostic engines build at once

    # -- building -------------------------------------------------------------------------
    def _config(self):
        from paddle import inference as pi

        config = pi.Config(self.meta.file("model.pdmodel"), self.meta.file("model.pdiparams"))
        if self.device == "cpu":
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(self.threads)
            if self.mkldnn:
                config.enable_mkldnn()
                if self.mkldnn_cache:
                    config.set_mkldnn_cache_capacity(self.mkldnn_cache)
                if self.mkldnn_int8:
                    # rebuilds the CPU pass list; the broken pass is deleted again below
                    config.enable_mkldnn_int8(set(self.int8_ops))
            else:
                config.disable_mkldnn()
        else:
            config.enable_use_gpu(self.gpu_mem_mb, self.gpu_id)
            if self.trt_precision is not None:
                self._enable_trt(config, pi)
        config.switch_ir_optim(True)
        config.enable_memory_optim()
        config.switch_use_feed_fetch_ops(False)
        config.disable_glog_info()
        # last: on Paddle 2.6.2 a Config call after delete_pass (disable_glog_info, ...)
        # brings the deleted pass back, and with it wrong GFL/PicoDet boxes
        for name in BROKEN_PASSES:
            config.delete_pass(name)
        return config

    def _enable_trt(self, config, pi) -> None:
        r = self._range
        if r is None:
            raise RuntimeError("TensorRT needs prepare(shape_range) before the first inference")
        precision = {"fp32": pi.PrecisionType.Float32, "fp16": pi.PrecisionType.Half,
                     "int8": pi.PrecisionType.Int8}[self.trt_precision]
        config.enable_tensorrt_engine(
            workspace_size=self.workspace_mb << 20, max_batch_size=r.max[0],
            min_subgraph_size=self.min_subgraph_size, precision_mode=precision,
            use_static=self.use_static, use_calib_mode=self.trt_precision == "int8")
        if self.trt_cache_dir:
            config.set_optim_cache_dir(self.trt_cache_dir)
        config.set_trt_dynamic_shape_info({"image": list(r.min)}, {"image": list(r.max)},
                                          {"image": list(r.opt)})
        log.info("TensorRT %s profile image min=%s opt=%s max=%s", self.trt_precision,
                 r.min, r.opt, r.max)

    def _build(self) -> None:
        from paddle import inference as pi

        self._predictor = pi.create_predictor(self._config())
        names = self._predictor.get_input_names()
        if len(names) != 1:
            raise ValueError(f"expected one graph input 'image', found {names}")
        self._inputs = self._predictor.get_input_handle(names[0])
        graph_out = list(self._predictor.get_output_names())
        self._outputs = [self._predictor.get_output_handle(n) for n in graph_out]
        want = list(self.meta.output_names)
        if len(graph_out) != len(want):
            raise ValueError(f"graph has outputs {graph_out}, infer_cfg.yml names {want}")
        if self.trt_precision == "int8":
            self._calibrate()

    def prepare(self, shape_range: ShapeRange) -> None:
        if self.trt_precision is None:
            return
        if self._range is not None and self._range.covers(shape_range):
            return
        self._range = shape_range if self._range is None else self._range.union(shape_range)
        self._build()

    def _calibrate(self) -> None:
        """Feed calibration images once (Paddle-TRT writes the INT8 table as it goes)."""
        from ..imageio import list_images
        from ..preprocess import Preprocessor, preprocess_path

        pre = Preprocessor(self.meta.preprocess)
        for f in list_images(self.calib_dir, self.calib_images):
            self._run(preprocess_path(self.meta, f, pre))

    # -- running --------------------------------------------------------------------------
    def _run(self, image: np.ndarray) -> List[np.ndarray]:
        self._inputs.reshape(list(image.shape))
        self._inputs.copy_from_cpu(np.ascontiguousarray(image, np.float32))
        self._predictor.run()
        return [o.copy_to_cpu() for o in self._outputs]

    def infer(self, image: np.ndarray) -> List[np.ndarray]:
        if self._predictor is None:
            # No plan was given (direct use): profile the one shape we are handed.
            b, _, h, w = image.shape
            self.prepare(ShapeRange.from_shapes([(b, h, w)]))
        return self._run(image)

    def describe(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"engine": "paddle-inference", "device": self.device}
        if self.device == "cpu":
            d.update(threads=self.threads, mkldnn=self.mkldnn)
            if self.mkldnn_int8:
                d.update(mkldnn_int8=True, int8_ops=self.int8_ops)
        if self.trt_precision:
            d.update(trt_precision=self.trt_precision,
                     trt_range=None if self._range is None else
                     {"min": self._range.min, "opt": self._range.opt, "max": self._range.max})
        return d

    def close(self) -> None:
        self._predictor = self._inputs = self._outputs = None
