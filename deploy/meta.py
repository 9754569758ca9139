"""Export metadata: the ``infer_cfg.yml`` written next to an exported model.

The schema is defined in ``docs/export_format.md``. Only the fields a runner needs are read;
``arch`` is informational and nothing here branches on it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import yaml

META_FILE = "infer_cfg.yml"
_OUTPUT_KINDS = ("dense", "topk")
_POST_TYPES = ("nms", "topk", "none")


@dataclass(frozen=True)
class PostprocessCfg:
    """Numpy post-processing settings (``Postprocess`` in ``infer_cfg.yml``)."""

    type: str = "nms"
    score_threshold: float = 0.025
    nms_threshold: float = 0.6
    nms_top_k: int = 1000
    keep_top_k: int = 100
    class_agnostic: bool = False
    num_top_queries: int = 300


@dataclass(frozen=True)
class ExportMeta:
    """Parsed ``infer_cfg.yml``.

    Attributes:
        model_dir: The export directory.
        arch: Architecture name, informational only.
        label_list: Class names; index = class id of the ``scores`` last axis.
        input_shape: ``[B, 3, H, W]``; ``-1`` marks a dynamic dimension.
        preprocess: The ``Preprocess`` op list, as dicts with a ``type`` key.
        pad_stride: Pad H and W up to a multiple of this (0/1: no constraint).
        output_kind: ``dense`` (scores ``[B, N, C]`` + boxes ``[B, N, 4]``) or ``topk``.
        output_names: Graph output names in graph order.
        post: Post-processing settings.
        category_ids: Optional dataset category id per class index (COCO ids); empty when
            the export does not record them.
    """

    model_dir: str
    arch: str = ""
    label_list: Tuple[str, ...] = ()
    input_shape: Tuple[int, int, int, int] = (-1, 3, -1, -1)
    preprocess: Tuple[Dict[str, Any], ...] = ()
    pad_stride: int = 0
    output_kind: str = "dense"
    output_names: Tuple[str, ...] = ("scores", "boxes")
    post: PostprocessCfg = field(default_factory=PostprocessCfg)
    category_ids: Tuple[int, ...] = ()

    @property
    def fixed_batch(self) -> Optional[int]:
        """The batch size baked into the graph, or ``None`` when the batch is dynamic."""
        return self.input_shape[0] if self.input_shape[0] > 0 else None

    @property
    def fixed_hw(self) -> Optional[Tuple[int, int]]:
        """``(H, W)`` baked into the graph, or ``None`` when either is dynamic."""
        h, w = self.input_shape[2], self.input_shape[3]
        return (h, w) if h > 0 and w > 0 else None

    @property
    def stride(self) -> int:
        """Effective padding stride (1 when there is no constraint)."""
        return max(1, int(self.pad_stride or 1))

    def file(self, name: str) -> str:
        """Path of a file inside the export directory."""
        return os.path.join(self.model_dir, name)


def load_meta(model_dir: str) -> ExportMeta:
    """Read and validate ``<model_dir>/infer_cfg.yml``.

    Raises:
        FileNotFoundError: The directory or its metadata file is missing.
        ValueError: A field has a value outside the contract.
    """
    path = os.path.join(model_dir, META_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: not an export directory (see docs/export_format.md)")
    with open(path, "r", encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    shape = tuple(int(v) for v in cfg.get("input_shape", (-1, 3, -1, -1)))
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"{path}: input_shape must be [B, 3, H, W], got {list(shape)}")
    outputs = cfg.get("outputs") or {}
    kind = outputs.get("kind", "dense")
    if kind not in _OUTPUT_KINDS:
        raise ValueError(f"{path}: outputs.kind must be one of {_OUTPUT_KINDS}, got {kind!r}")
    default_names = ("scores", "boxes") if kind == "dense" else ("scores", "labels", "boxes")
    names = tuple(outputs.get("names") or default_names)
    post_raw = dict(cfg.get("Postprocess") or {})
    post_type = post_raw.pop("type", "nms" if kind == "dense" else "none")
    if post_type not in _POST_TYPES:
        raise ValueError(f"{path}: Postprocess.type must be one of {_POST_TYPES}, got {post_type!r}")
    known = set(PostprocessCfg.__dataclass_fields__) - {"type"}
    unknown = set(post_raw) - known
    if unknown:
        raise ValueError(f"{path}: unknown Postprocess keys {sorted(unknown)}")
    preprocess = tuple(dict(op) for op in (cfg.get("Preprocess") or ()))
    for op in preprocess:
        if "type" not in op:
            raise ValueError(f"{path}: every Preprocess op needs a 'type', got {op}")
    return ExportMeta(
        model_dir=model_dir,
        arch=str(cfg.get("arch", "")),
        label_list=tuple(str(x) for x in cfg.get("label_list") or ()),
        input_shape=shape,  # type: ignore[arg-type]
        preprocess=preprocess,
        pad_stride=int(cfg.get("pad_stride") or 0),
        output_kind=kind,
        output_names=names,
        post=PostprocessCfg(type=post_type, **post_raw),
        category_ids=tuple(int(x) for x in cfg.get("category_ids") or ()),
    )


def dump_meta(path: str, cfg: Dict[str, Any]) -> None:
    """Write an ``infer_cfg.yml`` dict (used by test fixtures and converters)."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


def label_names(meta: ExportMeta, num_classes: int) -> List[str]:
    """Class names padded with ``class_<i>`` when the label list is short."""
    names = list(meta.label_list)
    return names + [f"class_{i}" for i in range(len(names), num_classes)]
