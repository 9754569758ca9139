"""The export contract: ``infer_cfg.yml``, its schema, its writer and its reader.

Every module that writes or reads the file goes through here: the exporters of
``ppdet_ext/export`` and ``ppdet_ext/slim`` (this module imports nothing from training code),
the deploy runner and its backends. :data:`SCHEMA` lists every key with its type, default and
nested block; ``docs/export_format.md`` documents each one (``tests/test_export_contract.py``
checks that the two list the same keys). ``arch`` is informational: nothing branches on it.

Writing and reading both run :func:`check`: a key the schema does not know, or a value of the
wrong type, is a one-line ``ValueError`` naming the file, the key and the close matches.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

META_FILE = "infer_cfg.yml"
REQUIRED = object()  # a key without a default
_OUTPUT_KINDS = ("dense", "topk")
_POST_TYPES = ("nms", "topk", "none")


@dataclass(frozen=True)
class Key:
    """One key of ``infer_cfg.yml``.

    Attributes:
        type: YAML value type (``str``, ``int``, ``float``, ``bool``, ``list``, ``dict``) or a
            tuple of them; ``None`` is accepted for any key that has a default.
        doc: What the key means (docs/export_format.md has the long form).
        default: What the reader assumes when the key is absent; ``REQUIRED`` for none.
        item: Element type of a ``list``.
        keys: The nested keys of a ``dict`` block, or of each ``dict`` item of a list.
        variants: For a list of ops: the extra keys per value of the item's ``type`` key.
        choices: The allowed values, when the set is closed.
    """

    type: Any
    doc: str
    default: Any = REQUIRED
    item: Any = None
    keys: Optional[Mapping[str, "Key"]] = None
    variants: Optional[Mapping[str, Mapping[str, "Key"]]] = None
    choices: Tuple[Any, ...] = ()


PREPROCESS_OPS: Dict[str, Dict[str, Key]] = {
    "Resize": {
        "target_size": Key((list, int), "[h, w] (or one int for both) of the resize", item=int),
        "keep_ratio": Key(bool, "true: scale to fit inside target_size, aspect kept", True),
        "interp": Key(int, "OpenCV interpolation code (1 = INTER_LINEAR, 2 = INTER_CUBIC)", 1),
    },
    "NormalizeImage": {
        "mean": Key(list, "per-channel mean (RGB), after the /255 scale", [0, 0, 0], item=float),
        "std": Key(list, "per-channel std (RGB)", [1, 1, 1], item=float),
        "is_scale": Key(bool, "divide pixels by 255 first", True),
        "norm_type": Key(str, "ppdet's normalization name, kept for reference (mean/std is "
                              "always applied)", "mean_std"),
    },
    "Permute": {},
}

SCHEMA: Dict[str, Key] = {
    "arch": Key(str, "architecture name; informational, runners never branch on it", ""),
    "model_format": Key(str, "the format of the graph files (paddle | onnx)", "paddle"),
    "label_list": Key(list, "class names; index = class id of the scores' last axis", [],
                      item=str),
    "category_ids": Key(list, "dataset category id per class index (COCO ids)", [], item=int),
    "input_shape": Key(list, "[B, 3, H, W] of the graph input; -1 marks a dynamic dimension",
                       [-1, 3, -1, -1], item=int),
    "Preprocess": Key(list, "ops applied in order by deploy/preprocess.py", [], item=dict,
                      keys={"type": Key(str, "the op", choices=tuple(PREPROCESS_OPS))},
                      variants=PREPROCESS_OPS),
    "pad_stride": Key(int, "pad H and W up to a multiple of this; 0 or 1: no constraint", 0),
    "outputs": Key(dict, "the graph outputs", {}, keys={
        "kind": Key(str, "dense: scores [B, N, C] + boxes [B, N, 4]; topk: scores [B, K], "
                         "labels [B, K], boxes [B, K, 4]", "dense", choices=_OUTPUT_KINDS),
        "names": Key(list, "graph output names in graph order", "by kind", item=str),
    }),
    "Postprocess": Key(dict, "numpy post-processing of deploy/postprocess.py", {}, keys={
        "type": Key(str, "nms | topk (DETR on dense outputs) | none (the graph did it)",
                    "nms for dense, none for topk", choices=_POST_TYPES),
        "score_threshold": Key(float, "drop candidates below this score", 0.025),
        "nms_threshold": Key(float, "IoU above which NMS suppresses", 0.6),
        "nms_top_k": Key(int, "candidates per image before NMS", 1000),
        "keep_top_k": Key(int, "detections kept per image", 100),
        "class_agnostic": Key(bool, "one NMS over all classes", False),
        "num_top_queries": Key(int, "topk: top-k over queries x classes", 300),
    }),
    "rknn_split": Key(dict, "RT-DETR NPU/CPU split (ppdet_ext/export/rknn_split.py)", None, keys={
        "encoder": Key(str, "encoder graph file (image -> per-token outputs)"),
        "decoder": Key(str, "decoder graph file (selected queries -> dense outputs)"),
        "num_queries": Key(int, "K, the queries the CPU selects"),
        "encoder_outputs": Key(list, "encoder output names, in order", item=str),
        "decoder_inputs": Key(list, "decoder input names, in order", item=str),
        "decoder_input_shapes": Key(list, "fixed shape of each decoder input", [], item=list),
        "spatial_shapes": Key(list, "[h, w] of each memory level", [], item=list),
        "encoder_layout": Key(str, "channels_first: encoder outputs are [1, X, L]",
                              "channels_last", choices=("channels_first", "channels_last")),
        "sampling": Key(list, "sampling methods of the exported decoder", [], item=str),
        "gather_free": Key(bool, "discrete sampling exported as one-hot MatMuls", False),
    }),
    "quantization": Key(dict, "how an INT8 export was made; informational", None, keys={
        "method": Key(str, "ptq | qat", ""),
        "engine": Key(str, "the quantization engine used", ""),
        "algo": Key(str, "Paddle PTQ activation algorithm", ""),
        "calibrate_method": Key(str, "ONNX Runtime calibration method", ""),
        "calib_images": Key(int, "calibration images used", 0),
        "skip_layers": Key(list, "weight names of the layers kept in float", [], item=str),
        "onnx_format": Key(bool, "Paddle PTQ: quantize_linear/dequantize_linear pairs", True),
        "inlined_matmul_constants": Key(list, "matmul operands turned into graph constants",
                                        [], item=str),
        "per_channel": Key(bool, "ONNX Runtime: per-channel weight scales", True),
        "activation": Key(str, "ONNX Runtime: uint8 | int8 activations", "uint8"),
        "quantize_outputs": Key(bool, "ONNX Runtime: Conv outputs quantized too", False),
        "seconds": Key(float, "wall time of the quantization", 0.0),
    }),
}


def _is(value: Any, typ: Any) -> bool:
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types) or (float in types and isinstance(value, int))


def _unknown(where: str, keys, known, source: str) -> None:
    unknown = sorted(set(keys) - set(known))
    if unknown:
        hints = {k: difflib.get_close_matches(k, list(known), n=1) for k in unknown}
        hint = "; ".join(f"{k!r}: did you mean {m[0]!r}?" for k, m in hints.items() if m)
        raise ValueError(f"{source}: unknown {where} keys {unknown}"
                         f"{' (' + hint + ')' if hint else ''}; see docs/export_format.md")


def _check_value(name: str, value: Any, key: Key, source: str) -> None:
    if value is None:
        if key.default is REQUIRED:
            raise ValueError(f"{source}: {name} is required (docs/export_format.md)")
        return
    if not _is(value, key.type):
        raise ValueError(f"{source}: {name} must be {_type_name(key.type)}, got {value!r}")
    if key.choices and value not in key.choices:
        raise ValueError(f"{source}: {name} must be one of {key.choices}, got {value!r}")
    if isinstance(value, list) and key.item is not None:
        for i, v in enumerate(value):
            if not _is(v, key.item):
                raise ValueError(f"{source}: {name}[{i}] must be {_type_name(key.item)}, got {v!r}")
            if isinstance(v, dict) and key.keys is not None:
                _check_block(f"{name}[{i}]", v, key, source)
    elif isinstance(value, dict) and key.keys is not None:
        _check_block(name, value, key, source)


def _check_block(name: str, block: Mapping[str, Any], key: Key, source: str) -> None:
    keys, where = dict(key.keys or {}), name
    if key.variants is not None:  # a list of ops: the keys depend on the op's type
        if "type" not in block:
            raise ValueError(f"{source}: every {name.split('[')[0]} op needs a 'type', got {block}")
        _check_value(f"{name}.type", block["type"], keys["type"], source)
        keys.update(key.variants[block["type"]])
        where = f"{name} ({block['type']})"
    _unknown(where, block, keys, source)
    for k, sub in keys.items():
        _check_value(f"{name}.{k}", block.get(k), sub, source)


def _type_name(typ: Any) -> str:
    return " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))


def type_label(key: Key) -> str:
    """The type of ``key`` as docs/export_format.md writes it (``list[int] or int``)."""
    types = key.type if isinstance(key.type, tuple) else (key.type,)
    return " or ".join(f"list[{key.item.__name__}]" if t is list and key.item is not None
                       else t.__name__ for t in types)


def schema_paths() -> Dict[str, Key]:
    """Every key of :data:`SCHEMA` by dotted path (``outputs.kind``, ``Preprocess.type``,
    ``Preprocess.Resize.target_size``; an op without parameters: ``Preprocess.Permute``)."""
    out: Dict[str, Key] = {}
    for name, key in SCHEMA.items():
        out[name] = key
        out.update({f"{name}.{k}": sub for k, sub in (key.keys or {}).items()})
        for op, keys in (key.variants or {}).items():
            out.update({f"{name}.{op}.{k}": sub for k, sub in keys.items()} or
                       {f"{name}.{op}": Key(dict, f"the {op} op, no parameters", {})})
    return out


def check(cfg: Mapping[str, Any], source: str = META_FILE) -> None:
    """Validate an ``infer_cfg.yml`` dict against :data:`SCHEMA`.

    Raises:
        ValueError: One line naming ``source``, the key and the fix (unknown keys come with
            their close matches).
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{source}: expected a mapping of keys, got {type(cfg).__name__}")
    _unknown("top-level", cfg, SCHEMA, source)
    for name, key in SCHEMA.items():
        _check_value(name, cfg.get(name), key, source)


def dumps_meta(cfg: Mapping[str, Any]) -> str:
    """The YAML text of an ``infer_cfg.yml`` dict (also embedded in ``model.onnx``)."""
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None)


def loads_meta(text: str, source: str = META_FILE) -> Dict[str, Any]:
    """Parse and :func:`check` ``infer_cfg.yml`` text."""
    cfg = yaml.safe_load(text) or {}
    check(cfg, source)
    return cfg


def write_meta(model_dir: str, cfg: Mapping[str, Any]) -> str:
    """Check ``cfg`` and write it as ``<model_dir>/infer_cfg.yml``; returns the path."""
    path = os.path.join(model_dir, META_FILE)
    check(cfg, path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(dumps_meta(cfg))
    return path


def read_meta_dict(model_dir: str) -> Dict[str, Any]:
    """``<model_dir>/infer_cfg.yml`` as a checked plain dict (for writers that extend it).

    Raises:
        FileNotFoundError: The directory or its metadata file is missing.
        ValueError: See :func:`check`.
    """
    path = os.path.join(model_dir, META_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: not an export directory (see docs/export_format.md)")
    with open(path, "r", encoding="utf-8") as f:
        return loads_meta(f.read(), path)


def copy_meta(src_dir: str, dst_dir: str, **blocks: Any) -> Dict[str, Any]:
    """Copy the metadata of ``src_dir`` to ``dst_dir``, setting ``blocks`` (e.g.
    ``quantization={...}``) on the way; returns what was written."""
    cfg = read_meta_dict(src_dir)
    cfg.update(blocks)
    write_meta(dst_dir, cfg)
    return cfg


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
    """Parsed ``infer_cfg.yml`` (see :data:`SCHEMA` for each key).

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
        rknn_split: The ``rknn_split`` block, ``None`` for a single-graph export.
        quantization: The ``quantization`` block, ``None`` for a float export.
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
    rknn_split: Optional[Mapping[str, Any]] = None
    quantization: Optional[Mapping[str, Any]] = None

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


def parse_meta(cfg: Mapping[str, Any], model_dir: str, source: str = META_FILE) -> ExportMeta:
    """An :class:`ExportMeta` from a checked ``infer_cfg.yml`` dict, defaults filled in."""
    shape = tuple(int(v) for v in cfg.get("input_shape") or (-1, 3, -1, -1))
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"{source}: input_shape must be [B, 3, H, W], got {list(shape)}")
    outputs = cfg.get("outputs") or {}
    kind = outputs.get("kind") or "dense"
    default_names = ("scores", "boxes") if kind == "dense" else ("scores", "labels", "boxes")
    post_raw = {k: v for k, v in (cfg.get("Postprocess") or {}).items() if v is not None}
    post_type = post_raw.pop("type", "nms" if kind == "dense" else "none")
    return ExportMeta(
        model_dir=model_dir,
        arch=str(cfg.get("arch") or ""),
        label_list=tuple(str(x) for x in cfg.get("label_list") or ()),
        input_shape=shape,  # type: ignore[arg-type]
        preprocess=tuple(dict(op) for op in (cfg.get("Preprocess") or ())),
        pad_stride=int(cfg.get("pad_stride") or 0),
        output_kind=kind,
        output_names=tuple(outputs.get("names") or default_names),
        post=PostprocessCfg(type=post_type, **post_raw),
        category_ids=tuple(int(x) for x in cfg.get("category_ids") or ()),
        rknn_split=cfg.get("rknn_split"),
        quantization=cfg.get("quantization"),
    )


def load_meta(model_dir: str) -> ExportMeta:
    """Read, check and parse ``<model_dir>/infer_cfg.yml``: the one reader of the file.

    Raises:
        FileNotFoundError: The directory or its metadata file is missing.
        ValueError: A key or value outside the contract (one line, see :func:`check`).
    """
    return parse_meta(read_meta_dict(model_dir), model_dir, os.path.join(model_dir, META_FILE))


def label_names(meta: ExportMeta, num_classes: int) -> List[str]:
    """Class names padded with ``class_<i>`` when the label list is short."""
    names = list(meta.label_list)
    return names + [f"class_{i}" for i in range(len(names), num_classes)]
