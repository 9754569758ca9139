"""Static post-training quantization (PTQ) of an export directory.

The engine is Paddle 2.6's ``paddle.static.quantization.PostTrainingQuantization`` (what
PaddleSlim's ``quant_post_static`` wraps; ``quant_post_static`` itself swallows the first
constructor error behind a bare ``except`` and retries without ``data_loader``, so we call
the engine directly). Measured on Paddle 2.6.2 (docs/quantization.md):

* ``onnx_format=True`` (``quantize_linear``/``dequantize_linear`` pairs, the default) is
  the format Paddle Inference's oneDNN INT8 path (``enable_mkldnn_int8``) and paddle2onnx
  (→ ONNX QDQ) both read. The legacy format (``fake_quantize_range_abs_max`` +
  ``fake_channel_wise_dequantize_max_abs``) stops oneDNN INT8 with "Could not find threshold
  information for [matmul_v2_0.tmp_0]".
* Only conv2d / depthwise_conv2d are quantized: the GFL/PicoDet DFL projection is a
  ``matmul_v2`` with a 1-D weight that PTQ cannot quantize.

The output directory is a normal export directory (``model.pdmodel``/``.pdiparams`` +
``infer_cfg.yml`` copied from the FP32 export, plus a ``quantization`` block that runners
ignore), so the deploy runner loads it like any other.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import yaml

from .static_graph import in_static_mode

ALGOS = ("abs_max", "avg", "hist", "KL", "mse", "emd", "min_max", "ptf")
QUANTIZABLE_OP_TYPES = ("conv2d", "depthwise_conv2d")


@dataclass
class PTQConfig:
    """What :func:`quantize_export` does.

    Attributes:
        algo: Activation calibration algorithm (:data:`ALGOS`; ``avg``/``hist``/``KL``/``mse``
            are the usual ones; ``abs_max`` is fastest; ``mse`` is slow).
        calib_images: Images used for calibration (batch 1 each).
        skip_layers: Weight variable names (``conv2d_1.w_0``) of layers kept in float, e.g.
            from :meth:`ppdet_ext.slim.sensitivity.SensitivityReport.skip_list`.
        hist_percent: ``hist`` algorithm percentile.
        onnx_format: Write ``quantize_linear``/``dequantize_linear`` (see module docstring).
        op_types: Op types to quantize.
        weight_quantize_type: ``channel_wise_abs_max`` | ``abs_max``.
        bias_correction: Paddle PTQ's bias correction of quantized weights.
    """

    algo: str = "hist"
    calib_images: int = 32
    skip_layers: List[str] = field(default_factory=list)
    hist_percent: float = 0.9999
    onnx_format: bool = True
    op_types: List[str] = field(default_factory=lambda: list(QUANTIZABLE_OP_TYPES))
    weight_quantize_type: str = "channel_wise_abs_max"
    bias_correction: bool = False

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        if self.calib_images < 1:
            raise ValueError("calib_images must be >= 1")


def _feed_loader(batches_fn: Callable[[], Iterable[Dict[str, np.ndarray]]], n: int):
    """A ``paddle.io.DataLoader`` stand-in yielding feed dicts.

    Paddle 2.6's PTQ asserts ``isinstance(data_loader, paddle.io.DataLoader)`` and then only
    calls ``data_loader()`` and ``len(data_loader)``; a real DataLoader would need the
    program's feed variables before the PTQ has loaded the program.
    """
    import paddle

    class _FeedLoader(paddle.io.DataLoader):
        def __init__(self):  # noqa: D401  (deliberately not calling DataLoader.__init__)
            self._fn, self._n = batches_fn, n

        def __call__(self):
            return iter(self._fn())

        def __len__(self):
            return self._n

    return _FeedLoader()


def _ptq_class():
    from paddle.static.quantization import PostTrainingQuantization

    from paddle.static.quantization.quant_config import BaseQuantizer

    class _OpsOnly(BaseQuantizer):
        """Quantize exactly ``quantizable_op_type``; observe nothing else.

        Paddle 2.6's default config *observes* every op of ``SUPPORT_ACT_QUANTIZATION_OP_DICT``
        and, in ``onnx_format``, writes a quantize/dequantize pair after each of them —
        including the box-decode arithmetic after the head (centres +/- distances in pixels,
        up to the input size), which INT8 rounds by several pixels, and scalars the oneDNN
        INT8 pass then cannot find scales for. Measured on PicoDet-S: score correlation with
        FP32 0.10 and 150 px box errors with the default, see docs/quantization.md.
        """

        @property
        def observer_operation_types(self):
            return []

    class _PTQ(PostTrainingQuantization):
        """Paddle's PTQ with :class:`_OpsOnly`, and Paddle 2.6.2's ``avg`` sampler fixed: it
        reshapes every sampled tensor to ``[shape[0], -1]`` and raises IndexError on 0-D
        tensors (GFL/PicoDet graphs have 0-D scalars among the observed outputs)."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.quant_config = _OpsOnly(quantizable_op_type=list(kw["quantizable_op_type"]),
                                         quant_bits=kw.get("weight_bits", 8))

        def _sample_avg(self):
            from paddle.static.quantization import utils

            orig = utils.load_variable_data

            def load(scope, name):
                v = orig(scope, name)
                return v.reshape(1) if v.ndim == 0 else v

            utils.load_variable_data = load
            try:
                return super()._sample_avg()
            finally:
                utils.load_variable_data = orig

    return _PTQ


@dataclass
class PTQResult:
    out_dir: str
    config: Dict[str, Any]
    calib_files: List[str]
    quantized_layers: int
    skipped_layers: List[str]
    seconds: float

    def to_dict(self):
        return asdict(self)


@in_static_mode
def quantize_export(model_dir: str, out_dir: str, calib_files: Sequence[str],
                    cfg: Optional[PTQConfig] = None) -> PTQResult:
    """Post-training-quantize the FP32 export ``model_dir`` into ``out_dir``.

    Args:
        model_dir: FP32 export directory (docs/export_format.md).
        out_dir: New export directory for the INT8 model.
        calib_files: Calibration images (the first ``cfg.calib_images`` are used).
        cfg: Settings (:class:`PTQConfig`).

    Returns:
        What was done (also written to ``out_dir/quant_info.yml``).
    """
    import paddle

    from ppdet_ext_deploy.meta import load_meta

    from .calib import calib_batches
    from .static_graph import StaticModel

    cfg = cfg or PTQConfig()
    t0 = time.perf_counter()
    meta = load_meta(model_dir)
    files = list(calib_files)[: cfg.calib_images]
    if not files:
        raise ValueError("no calibration images")
    layers = StaticModel(model_dir).layers(tuple(cfg.op_types))
    known = {l.name for l in layers}
    unknown = sorted(set(cfg.skip_layers) - known)
    if unknown:
        raise ValueError(f"skip_layers not among the quantizable layers of {model_dir}: {unknown}; "
                         f"e.g. {sorted(known)[:5]}")
    feed_name = "image"

    def batches():
        for x in calib_batches(meta, files):
            yield {feed_name: x}

    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    ptq = _ptq_class()(
        executor=exe, scope=scope, model_dir=model_dir, model_filename="model.pdmodel",
        params_filename="model.pdiparams", data_loader=_feed_loader(batches, len(files)),
        batch_nums=len(files), algo=cfg.algo, hist_percent=cfg.hist_percent,
        quantizable_op_type=list(cfg.op_types), onnx_format=cfg.onnx_format,
        weight_quantize_type=cfg.weight_quantize_type, bias_correction=cfg.bias_correction,
        skip_tensor_list=list(cfg.skip_layers) or None)
    with paddle.static.scope_guard(scope):
        ptq.quantize()
        os.makedirs(out_dir, exist_ok=True)
        ptq.save_quantized_model(out_dir, model_filename="model.pdmodel",
                                 params_filename="model.pdiparams")
    inlined = inline_matmul_constants(out_dir)
    result = PTQResult(out_dir=out_dir, config=asdict(cfg), calib_files=files,
                       quantized_layers=len(layers) - len(cfg.skip_layers),
                       skipped_layers=list(cfg.skip_layers), seconds=time.perf_counter() - t0)
    write_int8_meta(model_dir, out_dir, {"method": "ptq", "engine": "paddle PostTrainingQuantization",
                                         "algo": cfg.algo, "calib_images": len(files),
                                         "skip_layers": list(cfg.skip_layers),
                                         "onnx_format": cfg.onnx_format,
                                         "inlined_matmul_constants": inlined})
    with open(os.path.join(out_dir, "quant_info.yml"), "w") as f:
        yaml.safe_dump(result.to_dict(), f, sort_keys=False)
    return result


def write_int8_meta(fp32_dir: str, out_dir: str, info: Dict[str, Any]) -> None:
    """Copy ``infer_cfg.yml`` from the FP32 export, adding a ``quantization`` block."""
    from ppdet_ext_deploy.meta import copy_meta

    copy_meta(fp32_dir, out_dir, quantization=info)
    for extra in ("config.yml",):
        src = os.path.join(fp32_dir, extra)
        if os.path.isfile(src):
            shutil.copy(src, os.path.join(out_dir, extra))


@in_static_mode
def inline_matmul_constants(model_dir: str) -> List[str]:
    """Turn float ``matmul``/``matmul_v2`` constant operands into ``assign_value`` ops.

    Paddle 2.6.2's oneDNN INT8 pass (``quant_dequant_mkldnn_pass``) treats every persistable
    matmul operand as a weight and stops with "Could not find threshold information for
    [eager_tmp_0]" when it is not quantized — the GFL/PicoDet DFL projection ``[0..reg_max]``.
    As a graph constant the operand is an ordinary activation and the pass leaves the matmul
    in FP32. Rewrites ``model_dir`` in place; returns the inlined variable names.
    """
    import paddle

    from .static_graph import StaticModel

    m = StaticModel(model_dir)
    block = m.program.global_block()
    dequantized = {o for op in block.ops if op.type == "dequantize_linear" for o in op.output_arg_names}
    done: Dict[str, str] = {}
    i = 0
    while i < len(block.ops):
        op = block.ops[i]
        if op.type in ("matmul", "matmul_v2"):
            for slot in ("X", "Y"):
                name = op.input(slot)[0]
                var = block.var(name)
                if not var.persistable or name in dequantized:
                    continue
                if name not in done:
                    value = m.get(name).astype(np.float32)
                    new = f"{name}.const"
                    block.create_var(name=new, shape=value.shape, dtype=var.dtype, persistable=False)
                    block._insert_op(i, type="assign_value", outputs={"Out": [new]},
                                     attrs={"shape": list(value.shape), "dtype": var.dtype,
                                            "fp32_values": [float(v) for v in value.ravel()]})
                    done[name] = new
                    i += 1
                op._rename_input(name, done[name])
        i += 1
    if not done:
        return []
    m.program._sync_with_cpp()
    feeds = [block.var(n) for n in m.feeds]
    fetches = [block.var(n) for n in m.fetch_names]
    with paddle.static.scope_guard(m.scope):
        paddle.static.save_inference_model(os.path.join(model_dir, "model"), feeds, fetches, m.exe,
                                           program=m.program)
    return sorted(done)
