"""Quantization-aware training (QAT) of a ppdet model, and export of the INT8 graph.

Engine: Paddle 2.6's dygraph ``ImperativeQuantAware`` (what PaddleSlim's
``paddleslim.dygraph.quant.QAT`` wraps). :func:`apply_qat` swaps ``Conv2D``/``Linear``
sublayers *in place* for fake-quantized versions that share the original parameters, so an
optimizer built afterwards (ppdet's Trainer) trains the same weights; the quantizer's scales
are buffers updated in the forward pass.

A slim config (``--slim_config``, read by :mod:`ppdet_ext.slim.ppdet_slim_config`, which also
takes ppdet's ``QAT: {quant_config: {...}}`` layout) holds these settings::

    slim: QAT
    QAT:
      weight_quantize_type: channel_wise_abs_max
      activation_quantize_type: moving_average_abs_max
      quantizable_layer_type: [Conv2D]
      moving_rate: 0.9
      skip_layers: []          # sublayer-name prefixes kept in float, e.g. [backbone.conv1]
      onnx_format: true        # quantize_linear/dequantize_linear: oneDNN INT8 + paddle2onnx
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import yaml

_WEIGHT_TYPES = ("abs_max", "channel_wise_abs_max")
_ACT_TYPES = ("moving_average_abs_max", "abs_max", "range_abs_max")


@dataclass
class QATConfig:
    """Settings of :func:`apply_qat` (the ``QAT`` block of a slim config)."""

    weight_quantize_type: str = "channel_wise_abs_max"
    activation_quantize_type: str = "moving_average_abs_max"
    quantizable_layer_type: List[str] = field(default_factory=lambda: ["Conv2D"])
    weight_bits: int = 8
    activation_bits: int = 8
    moving_rate: float = 0.9
    skip_layers: List[str] = field(default_factory=list)
    onnx_format: bool = True
    # PaddleSlim QAT's options (ppdet's quant_config): PACT clipping before quantizing,
    # conv+bn fusion while training
    weight_preprocess_type: Optional[str] = None
    activation_preprocess_type: Optional[str] = None
    fuse_conv_bn: bool = False

    def __post_init__(self):
        if self.weight_quantize_type not in _WEIGHT_TYPES:
            raise ValueError(f"weight_quantize_type must be one of {_WEIGHT_TYPES}")
        if self.activation_quantize_type not in _ACT_TYPES:
            raise ValueError(f"activation_quantize_type must be one of {_ACT_TYPES}")
        for key in ("weight_preprocess_type", "activation_preprocess_type"):
            if getattr(self, key) not in (None, "PACT"):
                raise ValueError(f"{key} must be PACT or null, got {getattr(self, key)!r}")


def load_slim_config(path: str) -> QATConfig:
    """The QAT settings of a slim config (``slim: QAT``, ppdet's layout or ours; read by
    :func:`ppdet_ext.slim.ppdet_slim_config.read_slim_config`); errors name the key."""
    from .ppdet_slim_config import read_slim_config

    slim = read_slim_config(path)
    if slim.method != "QAT":
        raise ValueError(f"{path}: expected 'slim: QAT', got {slim.method!r}")
    return slim.settings


def mark_skipped(model, patterns: List[str]) -> List[str]:
    """Set ``skip_quant = True`` on sublayers whose name matches a prefix or glob."""
    hit = []
    for name, layer in model.named_sublayers():
        if any(name == p or name.startswith(p + ".") or fnmatch.fnmatch(name, p) for p in patterns):
            layer.skip_quant = True
            hit.append(name)
    missing = [p for p in patterns if not any(h == p or h.startswith(p + ".") or fnmatch.fnmatch(h, p)
                                               for h in hit)]
    if missing:
        raise ValueError(f"skip_layers {missing} match no sublayer of {type(model).__name__}")
    return hit


def apply_qat(model, qcfg: Optional[QATConfig] = None):
    """Insert fake-quant ops into ``model`` in place; returns the quantizer (for export).

    Args:
        model: A ppdet architecture (``paddle.nn.Layer``), weights already loaded.
        qcfg: :class:`QATConfig`.
    """
    from paddle.quantization import ImperativeQuantAware

    qcfg = qcfg or QATConfig()
    mark_skipped(model, qcfg.skip_layers)
    pact = None
    if "PACT" in (qcfg.weight_preprocess_type, qcfg.activation_preprocess_type):
        from paddleslim.dygraph.quant.qat import PACT as pact
    quanter = ImperativeQuantAware(
        quantizable_layer_type=list(qcfg.quantizable_layer_type),
        weight_quantize_type=qcfg.weight_quantize_type,
        activation_quantize_type=qcfg.activation_quantize_type,
        weight_bits=qcfg.weight_bits, activation_bits=qcfg.activation_bits,
        moving_rate=qcfg.moving_rate, onnx_format=qcfg.onnx_format,
        fuse_conv_bn=qcfg.fuse_conv_bn,
        weight_preprocess_layer=pact if qcfg.weight_preprocess_type else None,
        act_preprocess_layer=pact if qcfg.activation_preprocess_type else None)
    quanter.quantize(model)
    model._qat_quanter = quanter  # export needs it; also marks the model as QAT-wrapped
    return quanter


def count_quantized(model) -> int:
    """Number of fake-quantized sublayers in ``model``."""
    from paddle.nn.quant import quant_layers

    types = tuple(getattr(quant_layers, n) for n in ("QuantizedConv2D", "QuantizedLinear",
                                                      "QuantizedConv2DTranspose")
                  if hasattr(quant_layers, n))
    return sum(isinstance(l, types) for l in model.sublayers())


def export_qat(cfg, model, output_dir: str, *, input_shape=None, batch_size: int = -1) -> Dict[str, Any]:
    """Export a QAT-wrapped model as an INT8 export directory (docs/export_format.md).

    The graph is the same raw, NMS-free one :func:`ppdet_ext.export.export_model` writes,
    saved through the quantizer so the fake-quant ops become quantize/dequantize pairs.
    """
    import paddle
    from paddle.static import InputSpec

    from ppdet_ext.export import adapters, metadata
    from ppdet_ext_deploy.meta import write_meta
    from ppdet_ext.export.exporter import MODEL_NAME, _RawExport, resolve_input_shape

    quanter = getattr(model, "_qat_quanter", None)
    if quanter is None:
        raise ValueError("model has no QAT quantizer: call apply_qat(model) first")
    model.eval()
    shape = resolve_input_shape(cfg, input_shape, batch_size)
    spec = [InputSpec(shape, "float32", "image")]
    static = paddle.jit.to_static(_RawExport(model, False), input_spec=spec,
                                  full_graph=True)  # Paddle 2.6: required for jit.save
    os.makedirs(output_dir, exist_ok=True)
    quanter.save_quantized_model(static, os.path.join(output_dir, MODEL_NAME), input_spec=spec)
    paddle.disable_static()  # save_quantized_model leaves static mode on
    from .ptq import inline_matmul_constants

    inlined = inline_matmul_constants(output_dir)  # oneDNN INT8 needs it (see ptq.py)
    paddle.disable_static()
    meta = metadata.build(cfg, model, input_shape=shape,
                          outputs={"kind": "dense", "names": ["scores", "boxes"]},
                          postprocess=adapters.postprocess_cfg(model))
    meta["quantization"] = {"method": "qat", "engine": "paddle ImperativeQuantAware",
                            "inlined_matmul_constants": inlined}
    write_meta(output_dir, meta)
    return meta


def train_qat(cfg, user_cfg, qcfg: QATConfig, *, weights: Optional[str], output_dir: str,
              input_shape=None, seed: Optional[int] = None, validate: bool = False,
              run_name: Optional[str] = None, print_model: bool = False):
    """Load ``weights``, apply QAT, train with ``DetTrainer`` for ``cfg['epoch']`` epochs,
    then export the INT8 graph into ``output_dir``. Returns ``(trainer, meta)``.

    Args:
        validate: evaluate after each snapshot (``--eval``).
        run_name: the run directory's name (default ``<config name>_qat``).
        print_model: log the model before and after fake-quant insertion (ppdet's
            ``QAT.print_model``).
    """
    import numpy as np
    import paddle

    from ppdet.core.workspace import create
    from ppdet.utils.checkpoint import load_weight
    from ppdet.utils.logger import setup_logger

    from ppdet_ext.engine.api import run_dir, setup_device
    from ppdet_ext.engine.config import dump_config
    from ppdet_ext.engine.trainer import DetTrainer

    setup_device(cfg)
    if seed is not None:
        paddle.seed(seed)
        np.random.seed(seed)
    # checkpoints go to <save_dir>/<config name>_qat, never over the FP32 run's files
    if run_name:
        cfg["filename"] = run_name
    elif not str(cfg.get("filename", "")).endswith("_qat"):
        cfg["filename"] = f"{cfg.get('filename', 'model')}_qat"
    out = run_dir(cfg)
    os.makedirs(out, exist_ok=True)
    dump_config(user_cfg, os.path.join(out, "config.yml"))
    with open(os.path.join(out, "slim_config.yml"), "w") as f:
        yaml.safe_dump({"slim": "QAT", "QAT": asdict(qcfg)}, f, sort_keys=False)
    with paddle.utils.unique_name.guard():
        model = create(cfg["architecture"])
        if weights:
            load_weight(model, weights)
        logger = setup_logger("ppdet_ext.qat")
        if print_model:
            logger.info(f"model before quantization:\n{model}")
        apply_qat(model, qcfg)
        if print_model:
            logger.info(f"quantized model:\n{model}")
        cfg["model"] = model  # ppdet's Trainer uses a pre-built model when cfg has one
        try:
            trainer = DetTrainer(cfg, mode="train")
            trainer.train(validate)
        finally:
            cfg.pop("model", None)
    meta = export_qat(cfg, model, output_dir, input_shape=input_shape)
    return trainer, meta
