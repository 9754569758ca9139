"""Bookkeeping for the modules ``ppdet_ext`` registers into ``ppdet.core.workspace``.

``register`` wraps ppdet's own decorator and records the class, so tests can check that
everything we ship is registered, and that none of our names clashes with stock ppdet.
``reset_global_config`` undoes the process-global state that ppdet's config loading
leaves behind (ppdet merges user config *into* the registered schemas).
"""
import copy

from ppdet.core import workspace
from ppdet.core.config.schema import SchemaDict

PREFIX = "Ext"
_EXT_CLASSES = {}
_PRISTINE = {}


def register(cls):
    """Register ``cls`` into ppdet's workspace; its name must start with ``Ext``."""
    if not cls.__name__.startswith(PREFIX):
        raise ValueError(f"ppdet_ext class {cls.__name__!r} must be named {PREFIX}*")
    cls = workspace.register(cls)
    _EXT_CLASSES[cls.__name__] = cls
    return cls


def ext_module_names():
    """Names of every class ``ppdet_ext`` registered."""
    return sorted(_EXT_CLASSES)


def snapshot_pristine_config():
    """Remember the registered schemas as they are before any config is loaded."""
    _PRISTINE.clear()
    for key, value in workspace.global_config.items():
        if isinstance(value, SchemaDict):
            # the schema object itself holds a module reference (not copyable); its
            # dict items are what config merging mutates, so those are what we keep
            _PRISTINE[key] = (value, copy.deepcopy(dict(value)))


def reset_global_config():
    """Restore ppdet's global config to its state right after ``import ppdet_ext``."""
    cfg = workspace.global_config
    for key in list(cfg.keys()):
        if key not in _PRISTINE:
            del cfg[key]
    for key, (schema, items) in _PRISTINE.items():
        schema.clear()
        dict.update(schema, copy.deepcopy(items))
        dict.__setitem__(cfg, key, schema)
