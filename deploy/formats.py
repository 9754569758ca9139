"""The one table of deploy formats: what each needs and which options it takes.

Load, run and benchmark all go through :data:`FORMATS`; nothing else knows which class serves
which format. Adding an engine = one file in ``deploy/backends/`` + one row here.

Columns:
    name: What users type (``--backend paddle-trt-fp16``).
    backend: ``module:Class`` of a :class:`deploy.backends.base.Backend`, imported lazily.
    files: Files the export directory must hold.
    needs: Capabilities checked before loading (keys of :data:`CAPABILITIES`).
    fixed: Constructor options the row sets (not user-settable).
    options: User-settable options and their defaults (anything else is rejected).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .meta import ExportMeta, load_meta

_PADDLE = ".backends.paddle_inference:PaddleInferenceBackend"
_PADDLE_FILES = ("model.pdmodel", "model.pdiparams")
_GPU_OPTS = {"gpu_id": 0, "gpu_mem_mb": 1000}
_TRT_OPTS = {**_GPU_OPTS, "workspace_mb": 1024, "min_subgraph_size": 3, "use_static": False,
             "trt_cache_dir": None}


@dataclass(frozen=True)
class Format:
    name: str
    backend: str
    files: Tuple[str, ...]
    needs: Tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    help: str = ""


FORMATS: Tuple[Format, ...] = (
    Format("paddle-cpu", _PADDLE, _PADDLE_FILES, (), {"device": "cpu"},
           {"threads": 0, "mkldnn": True, "mkldnn_cache": 0},
           "Paddle Inference on CPU; oneDNN on/off, math threads (0 = all cores)"),
    Format("paddle-cpu-int8", _PADDLE, _PADDLE_FILES, (),
           {"device": "cpu", "mkldnn": True, "mkldnn_int8": True},
           {"threads": 0, "mkldnn_cache": 0, "int8_ops": ["conv2d", "depthwise_conv2d", "fused_conv2d"]},
           "Paddle Inference on CPU, oneDNN INT8 kernels for quantized exports (tools/quant.py); "
           "int8_ops: op types run in INT8"),
    Format("paddle-gpu", _PADDLE, _PADDLE_FILES, ("cuda",), {"device": "gpu"}, dict(_GPU_OPTS),
           "Paddle Inference on a CUDA GPU, native kernels"),
    Format("paddle-trt-fp32", _PADDLE, _PADDLE_FILES, ("cuda", "tensorrt"),
           {"device": "gpu", "trt_precision": "fp32"}, dict(_TRT_OPTS),
           "Paddle Inference + TensorRT FP32 subgraphs, dynamic shapes from the batch plan"),
    Format("paddle-trt-fp16", _PADDLE, _PADDLE_FILES, ("cuda", "tensorrt"),
           {"device": "gpu", "trt_precision": "fp16"}, dict(_TRT_OPTS),
           "Paddle Inference + TensorRT FP16 subgraphs, dynamic shapes from the batch plan"),
    Format("paddle-trt-int8", _PADDLE, _PADDLE_FILES, ("cuda", "tensorrt"),
           {"device": "gpu", "trt_precision": "int8"},
           {**_TRT_OPTS, "calib_dir": None, "calib_images": 32},
           "Paddle Inference + TensorRT INT8 (calibrates on calib_dir images first)"),
    Format("onnxruntime", ".backends.onnxruntime:OnnxRuntimeBackend", ("model.onnx",),
           ("onnxruntime",), {}, {"threads": 0, "providers": "CPUExecutionProvider"},
           "ONNX Runtime over model.onnx (written by tools/export_onnx.py)"),
    Format("rknn-sim", ".backends.rknn:RknnSimBackend", ("model.onnx",), ("rknn",), {},
           {"quant": "fp16", "target": "rk3588", "calib": None, "calib_images": 100,
            "float_ops": ("Softmax",), "disable_rules": (), "quant_algorithm": "normal",
            "log_dir": None,
            "export_path": None},
           "rknn-toolkit2 PC simulator (optional .venv-rknn); fixed input shape; quant "
           "fp16 | int8 | hybrid (calib = dataset.txt or image folder)"),
)


def _cuda() -> Optional[str]:
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        return (f"this Paddle {paddle.__version__} build has no CUDA (paddle.device."
                f"is_compiled_with_cuda() is False; the pinned CPU wheel). Install "
                f"paddlepaddle-gpu on a CUDA machine, or use --backend paddle-cpu / onnxruntime")
    if paddle.device.cuda.device_count() < 1:
        return "Paddle has CUDA but sees no GPU (paddle.device.cuda.device_count() == 0)"
    return None


def _tensorrt() -> Optional[str]:
    from paddle import inference as pi

    if tuple(pi.get_trt_compile_version()) == (0, 0, 0):
        return "this Paddle build was compiled without TensorRT (get_trt_compile_version() == 0.0.0)"
    if tuple(pi.get_trt_runtime_version()) == (0, 0, 0):
        return "TensorRT libraries were not found at run time (add them to LD_LIBRARY_PATH)"
    return None


def _onnxruntime() -> Optional[str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed"
    return None


def _rknn() -> Optional[str]:
    from .rknn.worker import unavailable_reason

    return unavailable_reason()


# Each check returns None when the capability is present, else the reason it is not.
CAPABILITIES: Dict[str, Callable[[], Optional[str]]] = {
    "cuda": _cuda, "tensorrt": _tensorrt, "onnxruntime": _onnxruntime, "rknn": _rknn,
}


class FormatUnavailable(RuntimeError):
    """The format cannot run here (missing capability or export file)."""


def get_format(name: str) -> Format:
    for f in FORMATS:
        if f.name == name:
            return f
    raise ValueError(f"unknown backend {name!r}; choose from {[f.name for f in FORMATS]}")


def check_available(fmt: Format, model_dir: Optional[str] = None) -> None:
    """Raise :class:`FormatUnavailable` with the reason when ``fmt`` cannot run here."""
    for need in fmt.needs:
        reason = CAPABILITIES[need]()
        if reason:
            raise FormatUnavailable(f"backend {fmt.name!r} needs {need}: {reason}")
    if model_dir is not None:
        missing = [f for f in fmt.files if not os.path.isfile(os.path.join(model_dir, f))]
        if missing:
            raise FormatUnavailable(f"backend {fmt.name!r} needs {missing} in {model_dir}")


def resolve_options(fmt: Format, options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Defaults of the row updated with ``options``; unknown keys raise ``ValueError``."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(fmt.options))
    if unknown:
        raise ValueError(f"backend {fmt.name!r} takes options {sorted(fmt.options)}; got {unknown}")
    return {**fmt.options, **options}


def create_backend(model_dir: str, name: str = "paddle-cpu", options: Optional[Mapping[str, Any]] = None,
                   meta: Optional[ExportMeta] = None):
    """Load an export directory with the backend of format ``name``.

    Raises:
        ValueError: Unknown format or option.
        FormatUnavailable: Missing capability (e.g. CUDA on a CPU build) or export file.
    """
    fmt = get_format(name)
    opts = resolve_options(fmt, options)
    check_available(fmt, model_dir)
    meta = meta or load_meta(model_dir)
    module, cls = fmt.backend.split(":")
    backend_cls = getattr(importlib.import_module(module, __package__), cls)
    return backend_cls(meta, **fmt.fixed, **opts)
