"""Map an architecture to its raw, NMS-free export outputs (see docs/export_format.md).

Our own architectures carry the capability themselves (``model.export_raw(image)``).
Stock ppdet architectures, whose classes we do not edit, get an adapter registered by
class with :func:`register_adapter` from its own module (``adapter_gfl.py``,
``adapter_picodet.py``; the package imports them): ``register_adapter(GFL)(gfl_raw_outputs)``.
Lookup walks the MRO, so subclasses inherit it.
"""
_ADAPTERS = {}


def register_adapter(arch_cls, *, postprocess=None):
    """Register ``fn(model, image) -> (scores [B,N,C], boxes [B,N,4])`` for ``arch_cls``.

    Args:
        arch_cls: architecture class (matched through the MRO).
        postprocess: callable ``model -> dict`` giving the ``Postprocess`` metadata.
    """
    def deco(fn):
        _ADAPTERS[arch_cls] = (fn, postprocess)
        return fn
    return deco


def _lookup(model):
    for cls in type(model).__mro__:
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    return None


def supports_export(model):
    return hasattr(model, "export_raw") or _lookup(model) is not None


def raw_outputs(model, image):
    """Dense raw outputs of ``model`` for a preprocessed ``image`` ``[B, 3, H, W]``."""
    if hasattr(model, "export_raw"):
        return model.export_raw(image)
    entry = _lookup(model)
    if entry is None:
        raise TypeError(f"{type(model).__name__} has no export_raw() and no registered "
                        "export adapter (ppdet_ext/export/adapters.py)")
    return entry[0](model, image)


def postprocess_cfg(model):
    """The ``Postprocess`` metadata block for ``model``."""
    if hasattr(model, "export_postprocess_cfg"):
        return model.export_postprocess_cfg()
    entry = _lookup(model)
    if entry is None or entry[1] is None:
        raise TypeError(f"no postprocess metadata known for {type(model).__name__}")
    return entry[1](model)


def _nms_cfg_from_head(head):
    nms = head.nms
    return {
        "type": "nms",
        "score_threshold": float(getattr(nms, "score_threshold", 0.025)),
        "nms_threshold": float(getattr(nms, "nms_threshold", 0.6)),
        "nms_top_k": int(getattr(nms, "nms_top_k", 1000)),
        "keep_top_k": int(getattr(nms, "keep_top_k", 100)),
        "class_agnostic": False,
    }
