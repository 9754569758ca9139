"""``--slim_config``: PaddleDetection's slim config layout, mapped onto our PaddleSlim code.

A slim config is an ordinary config file (same loader: ``_BASE_``, ppdet's ``!Tags``) whose
``slim:`` key names the method and whose block of that name holds its settings. Every other
key (``pretrain_weights``, ``weights``, ``epoch``, ``LearningRate``, ``TrainReader`` ...) is
merged over the model config, and ``-o`` overrides go on top (ppdet does the same). Runs are
named after the slim config, as in ppdet: ``output/<slim config name>/``,
``output_inference/<slim config name>/``.

=====================  =============================================  =========================
``slim:``              block (ppdet's layout / ours)                   engine
=====================  =============================================  =========================
``QAT``                ``{quant_config: {...}, print_model}`` or the   ``qat.apply_qat`` (Paddle
                       flat :class:`~ppdet_ext.slim.qat.QATConfig`     ImperativeQuantAware, as
                       fields (``configs/slim/qat_gfl.yml``)           PaddleSlim's QAT)
``PTQ``                ``{ptq_config: {...}, quant_batch_num, fuse,    ``ptq.quantize_export`` on
                       fuse_list, output_dir}`` or flat                an FP32 export (+ BN fold)
                       :class:`~ppdet_ext.slim.ptq.PTQConfig` fields
``Pruner``             ``{criterion, pruned_params, pruned_ratios,     ``filter_prune`` (PaddleSlim
                       print_params}``                                 L1-norm / FPGM filters)
``UnstructuredPruner`` ppdet's block                                   ppdet's own: its Trainer
                                                                       runs PaddleSlim's GMP
                                                                       pruner during training
=====================  =============================================  =========================

``Distill``, ``DistillPrune``, ``OFA`` and ``PrunerQAT`` are refused by name.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional

from ppdet_ext.engine.config import ConfigError, load_yaml_with_base, merge

from .ptq import PTQConfig
from .qat import QATConfig

SUPPORTED = ("QAT", "PTQ", "Pruner", "UnstructuredPruner")
NOT_SUPPORTED = ("Distill", "DistillPrune", "OFA", "PrunerQAT")

# PaddleSlim's dygraph QAT config keys (paddleslim.dygraph.quant.qat._quant_config_default)
# -> QATConfig fields. dtype and window_size are checked but unused by PaddleSlim's own engine
# (ImperativeQuantAware takes neither), so they are checked here and not passed on.
_QAT_DIRECT = ("weight_quantize_type", "activation_quantize_type", "weight_bits",
               "activation_bits", "moving_rate", "quantizable_layer_type", "onnx_format",
               "weight_preprocess_type", "activation_preprocess_type", "fuse_conv_bn")
_QAT_CHECKED_ONLY = ("dtype", "window_size")

# PaddleSlim's dygraph PTQ quantizer names -> our static PTQ engine's settings.
_ACT_QUANTIZERS = {"HistQuantizer": "hist", "KLQuantizer": "KL", "AbsmaxQuantizer": "abs_max"}
_WEIGHT_QUANTIZERS = {"PerChannelAbsmaxQuantizer": "channel_wise_abs_max",
                      "AbsmaxQuantizer": "abs_max"}
# HistQuantizer / KLQuantizer histogram settings: the static engine's histogram is fixed
# (2048 bins, no upsampling), so these are accepted as ppdet's configs write them and unused.
_PTQ_UNUSED = ("bins", "upsample_bins", "quant_bits")


@dataclass
class PTQSettings:
    """The ``PTQ`` block: the engine settings plus ppdet's run settings.

    Attributes:
        ptq: engine settings (:class:`~ppdet_ext.slim.ptq.PTQConfig`).
        quant_batch_num: calibration batches of ``EvalReader.batch_size`` images (ppdet's
            meaning); None when ``ptq.calib_images`` was given directly (our layout).
        fuse: fold batch_norm into the convs first (ppdet: conv+bn fusion).
        output_dir: ppdet's ``PTQ.output_dir``; the tools' ``--output_dir`` wins.
    """

    ptq: PTQConfig
    quant_batch_num: Optional[int] = 10
    fuse: bool = True
    output_dir: Optional[str] = None


@dataclass
class PrunerSettings:
    """The ``Pruner`` block (ppdet's ``ppdet.slim.prune.Pruner`` arguments)."""

    criterion: str
    pruned_params: List[str]
    pruned_ratios: List[float]
    print_params: bool = False


@dataclass
class SlimConfig:
    """A parsed slim config.

    Attributes:
        method: ``QAT`` | ``PTQ`` | ``Pruner`` | ``UnstructuredPruner``.
        settings: :class:`QATConfig`, :class:`PTQSettings`, :class:`PrunerSettings`, or the
            ``UnstructuredPruner`` block (a dict, checked against ppdet's class).
        model_keys: every other key, merged over the model config.
        path: the file.
        print_model: ppdet's ``QAT.print_model`` (log the model before/after quantizing).
    """

    method: str
    settings: Any
    model_keys: Dict[str, Any]
    path: str
    print_model: bool = False

    @property
    def name(self) -> str:
        """The run name: the slim config's file name without extension (ppdet's)."""
        return os.path.splitext(os.path.basename(self.path))[0]


def _unknown(path, key, known):
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], sorted(known), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return ConfigError(f"{path}: unknown key '{key}'{hint}; known: {sorted(known)}")


def _mapping(path, key, value):
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' must be a mapping, got {type(value).__name__}")
    return dict(value)


def _check_keys(path, prefix, block, known):
    for k in block:
        if k not in known:
            raise _unknown(path, f"{prefix}.{k}", known)


def _dataclass_from(path, prefix, cls, block):
    """``cls(**block)`` with unknown keys and bad values reported by key."""
    _check_keys(path, prefix, block, {f.name for f in fields(cls)})
    try:
        return cls(**block)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: '{prefix}': {e}") from None


def _qat(path, block):
    if "quant_config" not in block:  # our flat layout (configs/slim/qat_*.yml)
        return _dataclass_from(path, "QAT", QATConfig, block), False
    _check_keys(path, "QAT", block, {"quant_config", "print_model"})
    quant = _mapping(path, "QAT.quant_config", block["quant_config"])
    _check_keys(path, "QAT.quant_config", quant, _QAT_DIRECT + _QAT_CHECKED_ONLY)
    if quant.get("dtype", "int8") != "int8":
        raise ConfigError(f"{path}: 'QAT.quant_config.dtype: {quant['dtype']}': only int8")
    if not isinstance(quant.get("window_size", 0), int):
        raise ConfigError(f"{path}: 'QAT.quant_config.window_size' must be an integer")
    direct = {k: v for k, v in quant.items() if k in _QAT_DIRECT}
    return _dataclass_from(path, "QAT.quant_config", QATConfig, direct), \
        bool(block.get("print_model", False))


def _ptq(path, block):
    if "ptq_config" not in block:  # our flat layout: PTQConfig fields
        run = {k: block.pop(k) for k in ("fuse", "output_dir") if k in block}
        return PTQSettings(ptq=_dataclass_from(path, "PTQ", PTQConfig, block),
                           quant_batch_num=None, **run)
    _check_keys(path, "PTQ", block,
                {"ptq_config", "quant_batch_num", "fuse", "fuse_list", "output_dir"})
    if block.get("fuse_list"):
        raise ConfigError(f"{path}: 'PTQ.fuse_list' is not supported: with fuse: true every "
                          "conv -> batch_norm pair of the exported graph is folded")
    raw = _mapping(path, "PTQ.ptq_config", block["ptq_config"])
    _check_keys(path, "PTQ.ptq_config", raw,
                {"activation_quantizer", "weight_quantizer", "hist_percent"} | set(_PTQ_UNUSED))
    act = raw.get("activation_quantizer", "KLQuantizer")  # PaddleSlim's defaults
    weight = raw.get("weight_quantizer", "PerChannelAbsmaxQuantizer")
    if act not in _ACT_QUANTIZERS:
        raise ConfigError(f"{path}: 'PTQ.ptq_config.activation_quantizer: {act}': one of "
                          f"{sorted(_ACT_QUANTIZERS)}")
    if weight not in _WEIGHT_QUANTIZERS:
        raise ConfigError(f"{path}: 'PTQ.ptq_config.weight_quantizer: {weight}': one of "
                          f"{sorted(_WEIGHT_QUANTIZERS)}")
    if raw.get("quant_bits", 8) != 8:
        raise ConfigError(f"{path}: 'PTQ.ptq_config.quant_bits' must be 8")
    engine = {"algo": _ACT_QUANTIZERS[act], "weight_quantize_type": _WEIGHT_QUANTIZERS[weight]}
    if "hist_percent" in raw:
        engine["hist_percent"] = raw["hist_percent"]
    batches = block.get("quant_batch_num", 10)
    if not isinstance(batches, int) or batches < 1:
        raise ConfigError(f"{path}: 'PTQ.quant_batch_num' must be a positive integer")
    try:
        ptq = PTQConfig(**engine)
    except ValueError as e:
        raise ConfigError(f"{path}: 'PTQ.ptq_config': {e}") from None
    return PTQSettings(ptq=ptq, quant_batch_num=batches, fuse=bool(block.get("fuse", True)),
                       output_dir=block.get("output_dir"))


def _pruner(path, block):
    settings = _dataclass_from(path, "Pruner", PrunerSettings, block)
    if settings.criterion not in ("l1_norm", "fpgm"):
        raise ConfigError(f"{path}: 'Pruner.criterion: {settings.criterion}': l1_norm or fpgm")
    if len(settings.pruned_params) != len(settings.pruned_ratios):
        raise ConfigError(f"{path}: 'Pruner.pruned_params' ({len(settings.pruned_params)}) and "
                          f"'Pruner.pruned_ratios' ({len(settings.pruned_ratios)}) differ in length")
    if not all(0.0 <= float(r) < 1.0 for r in settings.pruned_ratios):
        raise ConfigError(f"{path}: 'Pruner.pruned_ratios' must lie in [0, 1)")
    return settings


def split_overrides(overrides: Dict[str, Any]):
    """``-o`` overrides -> ``(for the slim config, for the model config)``: keys under
    ``slim`` or a slim method's block (``-o PTQ.quant_batch_num=2``) go to the slim config."""
    slim = {k: v for k, v in overrides.items() if k == "slim" or k in SUPPORTED + NOT_SUPPORTED}
    return slim, {k: v for k, v in overrides.items() if k not in slim}


def read_slim_config(path: str, overrides: Optional[Dict[str, Any]] = None) -> SlimConfig:
    """Parse a slim config (ppdet's layout or ours); errors name the file and key.

    Args:
        overrides: nested ``-o`` values for ``slim`` / the method's block
            (:func:`split_overrides`), merged over the file.
    """
    data = load_yaml_with_base(path)
    merge(data, overrides or {})
    method = data.pop("slim", None)
    if method is None:
        raise ConfigError(f"{path}: no 'slim' key: a slim config names its method "
                          f"(slim: {' | '.join(SUPPORTED)})")
    if method in NOT_SUPPORTED:
        raise ConfigError(f"{path}: 'slim: {method}' is not supported here "
                          f"(supported: {', '.join(SUPPORTED)})")
    if method not in SUPPORTED:
        close = difflib.get_close_matches(str(method), SUPPORTED, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{path}: 'slim: {method}' is not a slim method{hint}; "
                          f"supported: {', '.join(SUPPORTED)}")
    for other in SUPPORTED + NOT_SUPPORTED:
        if other != method and other in data:
            raise ConfigError(f"{path}: key '{other}' is not used by 'slim: {method}'")
    block = _mapping(path, method, data.pop(method, None) or {})
    print_model = False
    if method == "QAT":
        settings, print_model = _qat(path, block)
    elif method == "PTQ":
        settings = _ptq(path, block)
    elif method == "Pruner":
        settings = _pruner(path, block)
    else:  # UnstructuredPruner: ppdet's registered module, checked with the model config
        settings = block
        data.update({"UnstructuredPruner": block, "unstructured_prune": True})
    return SlimConfig(method, settings, data, path, print_model)
