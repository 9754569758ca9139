"""Export a trained model to a Paddle static graph plus ``infer_cfg.yml``.

The graph ends at raw head outputs (no NMS); see docs/export_format.md.
"""
import os

import paddle
from paddle.static import InputSpec

from ppdet.core.workspace import create
from ppdet.utils.checkpoint import load_weight

from ppdet_ext_deploy.meta import write_meta

from . import adapters, metadata

MODEL_NAME = "model"


class _RawExport(paddle.nn.Layer):
    def __init__(self, model, topk):
        super().__init__()
        self.model = model
        self.topk = topk

    def forward(self, image):
        if self.topk:
            return self.model.export_raw_topk(image)
        return adapters.raw_outputs(self.model, image)


def static_program(model, shape, *, topk=False):
    """The static (``to_static``) main program of ``model``'s deploy forward at ``shape``:
    what export saves, for op inspection (e.g. "no grid_sample") and cost counting."""
    model.eval()
    static = paddle.jit.to_static(_RawExport(model, topk),
                                  input_spec=[InputSpec(list(shape), "float32", "image")],
                                  full_graph=True)
    return static.forward.concrete_program.main_program


def resolve_input_shape(cfg, input_shape=None, batch_size=-1):
    """``[B, 3, H, W]`` with -1 for dynamic dims.

    Priority: explicit ``input_shape`` ([H, W]) > ``TestReader.inputs_def.image_shape``
    (fixed-size models such as RT-DETR) > fully dynamic.
    """
    if input_shape is None:
        image_shape = (cfg["TestReader"].get("inputs_def") or {}).get("image_shape")
        input_shape = list(image_shape[-2:]) if image_shape else [-1, -1]
    h, w = (int(x) for x in input_shape)
    return [int(batch_size), 3, h, w]


def build_model(cfg, weights=None):
    model = create(cfg["architecture"])
    if weights:
        load_weight(model, weights)
    model.eval()
    if hasattr(model, "convert_to_deploy"):
        model.convert_to_deploy()
    return model


def export_model(cfg, output_dir, *, weights=None, input_shape=None, batch_size=-1,
                 with_postprocess=False, model=None):
    """Export ``cfg``'s model (optionally with ``weights``) into ``output_dir``.

    Args:
        cfg: the merged global config (``ppdet_ext.engine.config.load_config``).
        output_dir: directory to write ``model.pdmodel``/``.pdiparams``/``infer_cfg.yml``.
        weights: checkpoint path (``.pdparams`` with or without suffix).
        input_shape: ``[H, W]`` to fix the spatial size; default from the config.
        batch_size: fixed batch size, or -1 for dynamic.
        with_postprocess: for models that support it (``export_raw_topk``), bake the
            top-k selection into the graph (``outputs.kind: topk``).
        model: an already built model (skips building/loading).

    Returns:
        dict: the metadata written to ``infer_cfg.yml``.
    """
    model = model if model is not None else build_model(cfg, weights)
    model.eval()
    if not adapters.supports_export(model):
        raise metadata.ExportError(f"{type(model).__name__} does not support export")
    topk = bool(with_postprocess)
    if topk and not hasattr(model, "export_raw_topk"):
        raise metadata.ExportError(f"{type(model).__name__} cannot bake post-processing "
                                   "into the graph (no export_raw_topk)")
    shape = resolve_input_shape(cfg, input_shape, batch_size)
    static = paddle.jit.to_static(_RawExport(model, topk),
                                  input_spec=[InputSpec(shape, "float32", "image")],
                                  full_graph=True)  # Paddle 2.6: required for jit.save
    os.makedirs(output_dir, exist_ok=True)
    paddle.jit.save(static, os.path.join(output_dir, MODEL_NAME))
    if topk:
        outputs = {"kind": "topk", "names": ["scores", "labels", "boxes"]}
        post = {"type": "none"}
    else:
        outputs = {"kind": "dense", "names": ["scores", "boxes"]}
        post = adapters.postprocess_cfg(model)
    meta = metadata.build(cfg, model, input_shape=shape, outputs=outputs, postprocess=post)
    write_meta(output_dir, meta)
    return meta
