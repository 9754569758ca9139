"""What the tools do with a ``--slim_config`` (:mod:`.ppdet_slim_config`): train with it,
build the slimmed model to evaluate / infer / export, and post-training-quantize.

ppdet's meanings: training starts from ``pretrain_weights`` (loaded *before* pruning or
quantizing); evaluation, inference and export load ``weights`` (the slimmed checkpoint)
*after* the same slimming, so the checkpoint's shapes and fake-quant scales match.
"""
from __future__ import annotations

import os
from typing import Optional

from ppdet.utils.logger import setup_logger

from ppdet_ext.engine.config import ConfigError

from .ppdet_slim_config import SlimConfig

logger = setup_logger("ppdet_ext.slim")

_PTQ_HINT = ("is post-training quantization: run tools/post_quant.py -c CONFIG --slim_config "
             "FILE (or tools/export_model.py with it), as with ppdet")


def _pruned(cfg, slim: SlimConfig, weights_before: Optional[str] = None):
    from ppdet.utils.checkpoint import load_pretrain_weight

    from .filter_prune import build_fresh, prune_filters

    s = slim.settings
    model = build_fresh(cfg["architecture"])
    if weights_before:  # ppdet's Pruner: pretrained weights (partial match allowed) first
        load_pretrain_weight(model, weights_before)
    if s.print_params:
        logger.info("conv weights before pruning:\n" + "\n".join(
            f"{p.name} {p.shape}" for p in model.parameters() if len(p.shape) == 4))
    try:
        shapes = prune_filters(model, dict(zip(s.pruned_params, s.pruned_ratios)),
                               criterion=s.criterion)
    except ValueError as e:
        raise ConfigError(f"{slim.path}: 'Pruner.pruned_params': {e}") from None
    logger.info(f"pruned {len(shapes)} conv weights ({slim.path})")
    return model


def train(cfg, user_cfg, slim: SlimConfig, *, validate=False, resume=None, amp=False,
          use_vdl=False, seed=None):
    """Train with ``slim`` applied; returns the trainer. Runs are named after the slim
    config (``output/<slim config name>/``); a QAT run also writes its INT8 export to
    ``<run dir>/qat_export``."""
    from ppdet_ext.engine import api

    if slim.method == "PTQ":
        raise ConfigError(f"{slim.path}: 'slim: PTQ' {_PTQ_HINT}")
    if slim.method == "QAT":
        from .qat import train_qat

        if resume or amp:
            raise ConfigError(f"{slim.path}: --resume and --amp are not supported with "
                              "'slim: QAT'")
        cfg["use_vdl"] = bool(use_vdl or cfg.get("use_vdl", False))
        out = os.path.join(api.run_dir(cfg), "qat_export")
        trainer, _ = train_qat(cfg, user_cfg, slim.settings,
                               weights=cfg.get("pretrain_weights") or None, output_dir=out,
                               seed=seed, validate=validate, run_name=slim.name,
                               print_model=slim.print_model)
        logger.info(f"QAT INT8 export: {out}")
        return trainer
    if slim.method == "Pruner":
        # ppdet's Trainer takes a pre-built cfg["model"] and then skips pretrain_weights
        cfg["model"] = _pruned(cfg, slim, weights_before=cfg.get("pretrain_weights") or None)
    try:  # UnstructuredPruner: ppdet's Trainer runs it (cfg.unstructured_prune, set on load)
        return api.train(cfg, user_cfg, validate=validate, resume=resume, amp=amp,
                         use_vdl=use_vdl, seed=seed)
    except (AssertionError, RuntimeError) as e:
        if slim.method != "UnstructuredPruner":
            raise
        if "pruning iterations must be larger" in str(e):
            raise ConfigError(f"{slim.path}: 'UnstructuredPruner.pruning_epochs' x steps per "
                              "epoch must exceed 10 x 'pruning_steps' (PaddleSlim's GMP "
                              "pruner)") from None
        if "modified by an inplace operation" in str(e):
            raise ConfigError(
                f"{slim.path}: 'slim: UnstructuredPruner' cannot train {cfg['architecture']}: "
                "PaddleSlim's pruner re-masks each layer's weights in place before every call, "
                "and this model calls some layers more than once per forward (a head shared "
                "across FPN levels), which Paddle's autograd rejects; models without shared "
                "layers (e.g. PicoDet) train") from None
        raise
    finally:
        cfg.pop("model", None)


def model_for(cfg, slim: SlimConfig, weights: Optional[str]):
    """The slimmed model with ``weights`` (a slimmed checkpoint) loaded, for evaluation,
    inference or export; None when the method leaves the architecture as is
    (``UnstructuredPruner``: the checkpoint is a dense model with zeros)."""
    if slim.method == "PTQ":
        raise ConfigError(f"{slim.path}: 'slim: PTQ' {_PTQ_HINT}")
    if slim.method == "UnstructuredPruner":
        return None
    if slim.method == "QAT":
        from .filter_prune import build_fresh
        from .qat import apply_qat

        model = build_fresh(cfg["architecture"])
        apply_qat(model, slim.settings)
    else:
        model = _pruned(cfg, slim)
    if weights:
        _load_checkpoint(model, weights, slim)
    model.eval()
    return model


def _load_checkpoint(model, weights, slim: SlimConfig):
    """Load a slimmed checkpoint (read without running code from it) into ``model``; a
    checkpoint of another shape (e.g. FP32 weights for a pruned model, which Paddle would
    skip with a warning) is an error naming a tensor."""
    from ppdet_ext.weights import load_state

    path = weights if weights.endswith(".pdparams") else weights + ".pdparams"
    state = load_state(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    if missing or wrong:
        k = (wrong or missing)[0]
        there = list(state[k].shape) if k in state else "absent"
        raise ConfigError(f"{path}: not a checkpoint of the model '{slim.path}' builds "
                          f"({len(wrong)} tensors of other shapes, {len(missing)} missing; "
                          f"{k}: {there} there, {list(own[k].shape)} here)")
    model.set_state_dict({k: state[k] for k in own})


def export(cfg, user_cfg, slim: SlimConfig, *, weights, output_dir, input_shape=None,
           batch_size=-1):
    """Export the slimmed model: QAT -> INT8 graph (``qat.export_qat``); Pruner -> the pruned
    FP32 graph; PTQ -> :func:`post_quant`. Returns the export's metadata (PTQ: what
    :func:`post_quant` did)."""
    from ppdet_ext.engine import api

    if slim.method == "PTQ":
        return post_quant(cfg, user_cfg, slim, weights=weights, output_dir=output_dir).to_dict()
    model = model_for(cfg, slim, weights)
    if slim.method == "QAT":
        from ppdet_ext.engine.config import dump_config

        from .qat import export_qat

        meta = export_qat(cfg, model, output_dir, input_shape=input_shape, batch_size=batch_size)
        dump_config(user_cfg, os.path.join(output_dir, "config.yml"))
        return meta
    return api.export(cfg, user_cfg, weights=weights, output_dir=output_dir,
                      input_shape=input_shape, batch_size=batch_size, model=model)


def post_quant(cfg, user_cfg, slim: SlimConfig, *, weights, output_dir):
    """ppdet's ``tools/post_quant.py``: export FP32 to ``<output_dir>_fp32`` (BN folded into
    ``<output_dir>_fp32_bnfold`` when ``fuse``), calibrate on the first
    ``quant_batch_num x EvalReader.batch_size`` EvalDataset images, write the INT8 export to
    ``output_dir``. Returns the :class:`~ppdet_ext.slim.ptq.PTQResult`."""
    from ppdet_ext.engine import api

    from .calib import calib_files
    from .ptq import quantize_export

    if slim.method != "PTQ":
        raise ConfigError(f"{slim.path}: post-training quantization needs 'slim: PTQ', "
                          f"got 'slim: {slim.method}'")
    s = slim.settings
    fp32 = output_dir.rstrip("/") + "_fp32"
    api.export(cfg, user_cfg, weights=weights, output_dir=fp32)
    if s.fuse:
        from .bn_fold import fold_batch_norm

        folded = fold_batch_norm(fp32, fp32 + "_bnfold")
        logger.info(f"folded {len(folded)} batch_norm ops into {fp32}_bnfold")
        fp32 += "_bnfold"
    if s.quant_batch_num is None:
        count = s.ptq.calib_images
    else:
        count = s.quant_batch_num * int(cfg["EvalReader"].get("batch_size", 1))
    ds = cfg["EvalDataset"]
    files = calib_files(ds.get_anno(), count,
                        image_dir=os.path.join(ds.dataset_dir, ds.image_dir))
    s.ptq.calib_images = len(files)
    result = quantize_export(fp32, output_dir, files, s.ptq)
    logger.info(f"PTQ INT8 export: {output_dir} ({result.quantized_layers} layers, "
                f"{len(files)} calibration images)")
    return result
