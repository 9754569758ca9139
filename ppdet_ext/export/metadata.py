"""Build the ``infer_cfg.yml`` metadata of an export from a ppdet config.

The schema, writer and reader are ``ppdet_ext_deploy.meta`` (docs/export_format.md); this
module only translates ppdet's config into that schema.
"""
import os

from ppdet.core.workspace import create
from ppdet.data.source.category import get_categories

from ppdet_ext_deploy.meta import PREPROCESS_OPS

# the op parameters deploy/preprocess.py understands, per op
_PASSTHROUGH = {op: tuple(keys) for op, keys in PREPROCESS_OPS.items()}


class ExportError(ValueError):
    """A config cannot be exported; the message names the offending entry."""


def preprocess_ops(reader_cfg):
    """Translate ppdet ``TestReader.sample_transforms`` into deploy's op list."""
    ops = []
    for item in reader_cfg.get("sample_transforms", []):
        (name, args), = item.items()
        args = args or {}
        if name == "Decode":
            continue
        if name not in _PASSTHROUGH:
            raise ExportError(f"TestReader.sample_transforms: '{name}' has no deploy "
                              f"equivalent (supported: {sorted(_PASSTHROUGH)})")
        op = {"type": name}
        op.update({k: _plain(v) for k, v in args.items() if k in _PASSTHROUGH[name]})
        ops.append(op)
    return ops


def pad_stride(reader_cfg):
    for item in reader_cfg.get("batch_transforms", []) or []:
        (name, args), = item.items()
        if name in ("PadBatch", "PadStride"):
            args = args or {}
            return int(args.get("pad_to_stride", args.get("stride", 0)))
    return 0


def labels(cfg):
    """(label_list, category_ids): class index -> name and -> dataset category id."""
    anno = None
    for key in ("TestDataset", "EvalDataset"):
        if key in cfg:
            try:
                dataset = cfg[key] if hasattr(cfg[key], "get_anno") else create(key)()
                anno = dataset.get_anno()
            except Exception:  # no dataset configured: fall back to COCO names
                anno = None
            if anno and os.path.isfile(anno):
                break
            anno = None
    clsid2catid, catid2name = get_categories(cfg.get("metric", "COCO"), anno)
    ids = [int(clsid2catid[i]) for i in sorted(clsid2catid)]
    return [str(catid2name[c]) for c in ids], ids


def build(cfg, model, *, input_shape, outputs, postprocess):
    reader = cfg["TestReader"]
    label_list, category_ids = labels(cfg)
    return {
        "arch": cfg["architecture"],
        "model_format": "paddle",
        "label_list": label_list,
        "category_ids": category_ids,
        "input_shape": list(input_shape),
        "Preprocess": preprocess_ops(reader),
        "pad_stride": pad_stride(reader),
        "outputs": outputs,
        "Postprocess": postprocess,
    }


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v
