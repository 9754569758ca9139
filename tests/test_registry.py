"""Every class we ship is registered; none collides with a stock ppdet name."""
import importlib
import inspect
import pkgutil

import ppdet_ext
from ppdet.core import workspace
from ppdet_ext.registry import PREFIX, _EXT_CLASSES, ext_module_names

# names registered by newer PaddleDetection releases (2.7/2.8/develop) that 2.6.0 lacks
NEWER_PPDET_NAMES = {
    "RTDETR", "RTDETRTransformer", "RTDETRTransformerv2", "RTDETRTransformerv3",
    "HybridEncoder", "HybridEncoderv2", "DINOHead", "DINOLoss", "DINOTransformer",
    "DETRPostProcess", "DETRHead", "MaskDINO", "GroupDINOTransformer", "PPHGNetV2",
    "TransformerEncoder", "CSPRepLayer", "RTDETRHead", "DETRLoss", "DINOv3",
    "VarifocalLoss", "RTDETRPostProcess", "HungarianMatcher",
}


def _walk_ext_classes():
    """Classes named Ext* anywhere in ppdet_ext: the prefix is reserved for registered modules."""
    found = {}
    for mod in pkgutil.walk_packages(ppdet_ext.__path__, "ppdet_ext."):
        m = importlib.import_module(mod.name)
        for name, obj in vars(m).items():
            if inspect.isclass(obj) and obj.__module__ == m.__name__ and name.startswith(PREFIX):
                found[name] = obj
    return found


def test_every_ext_class_is_registered_in_ppdet_workspace():
    for name, cls in _walk_ext_classes().items():
        assert name in workspace.global_config, f"{name} is not registered"
        assert _EXT_CLASSES.get(name) is cls


def test_no_name_clashes_with_stock_or_newer_ppdet():
    ours = set(ext_module_names())
    stock = set(workspace.global_config) - ours
    assert not ours & stock
    assert not ours & NEWER_PPDET_NAMES
    assert all(n.startswith(PREFIX) for n in ours)


def test_register_refuses_unprefixed_names():
    import pytest
    from ppdet_ext.registry import register

    class Plain:  # noqa: D401
        pass

    with pytest.raises(ValueError, match="must be named Ext"):
        register(Plain)
