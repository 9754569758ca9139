"""Config loading: ``_BASE_`` inheritance, ``-o key=value`` overrides, validation.

ppdet merges config straight into its process-global workspace and silently ignores keys
nobody reads, so a typo (``epohc: 12``) trains with defaults. Here every top-level key
must be a registered module, a key some module shares (``num_classes``), or a known
trainer global; every key under a module must be one of its constructor arguments.
Errors are ``ConfigError`` and name the key, the file and close matches.

Files are read as safe YAML plus ppdet's registered ``!Tag`` objects
(``ppdet_ext.engine.tagged_yaml``), so stock ppdet configs load; the tagged objects'
arguments are checked the same way.
"""
import copy
import difflib
import inspect
import os

import yaml

from ppdet.core import workspace
from ppdet.core.config.schema import SchemaDict
from ppdet.data import transform as ppdet_transforms

from ppdet_ext.registry import reset_global_config

from . import tagged_yaml
from .tagged_yaml import Tagged, TagError

BASE_KEY = "_BASE_"

# Top-level keys read by ppdet's Trainer / our tools rather than by a module constructor.
TRAINER_GLOBALS = {
    "architecture", "metric", "num_classes", "weights", "pretrain_weights", "epoch",
    "use_gpu", "use_xpu", "use_mlu", "use_npu", "log_iter", "save_dir", "snapshot_epoch",
    "print_flops", "print_params", "find_unused_parameters", "use_ema", "ema_decay",
    "ema_decay_type", "ema_filter_no_grad", "ema_black_list", "cycle_epoch", "worker_num",
    "TrainDataset", "EvalDataset", "TestDataset", "TrainReader", "EvalReader",
    "TestReader", "LearningRate", "OptimizerBuilder", "norm_type", "amp", "amp_level",
    "use_vdl", "vdl_log_dir", "save_prediction_only", "classwise", "IouType",
    "output_eval", "to_static", "clip_grad_by_norm", "sync_bn", "fleet", "seed",
    "filename", "use_fused_allreduce_gradients", "init_loss_scaling",
    "custom_white_list", "custom_black_list", "export", "slim", "slim_type",
    "log_file", "eval_batch_sampler", "use_shared_memory", "infer_threshold",
    # also read by ppdet 2.6's Trainer: VOC AP type, face-detection eval, +1 box sizes,
    # the UnstructuredPruner switch (set by --slim_config)
    "map_type", "multi_scale_eval", "bias", "unstructured_prune",
}
READER_KEYS = {
    "sample_transforms", "batch_transforms", "batch_size", "shuffle", "drop_last",
    "collate_batch", "use_shared_memory", "inputs_def", "fuse_normalize",
    "mixup_epoch", "cutmix_epoch", "mosaic_epoch", "num_classes",
    # ours (ppdet_ext.engine.trainer): aspect-ratio grouped batches, aug switch-off
    "aspect_grouping", "stop_strong_aug_epoch", "strong_aug_ops",
}
DATASET_KEYS = {
    "name", "image_dir", "anno_path", "dataset_dir", "data_fields", "sample_num",
    "allow_empty", "empty_ratio", "load_crowd", "repeat", "use_default_label",
}


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


def _read_yaml(path, variables=None):
    try:
        with open(path) as f:
            data, anchored = tagged_yaml.load_document(f, path)
        data = data or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except TagError as e:
        raise ConfigError(str(e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if variables is not None:
        variables.update(anchored)
    return data


def merge(dst, src):
    """Recursive dict merge of ``src`` into ``dst`` (``src`` wins); returns ``dst``.

    A ``!Tag`` object in ``src`` replaces what ``dst`` had (as in ppdet); a plain mapping
    merged onto a ``!Tag`` object updates its arguments (``-o TrainDataset.dataset_dir=x``
    onto ``TrainDataset: !COCODataSet {...}``)."""
    for k, v in src.items():
        if isinstance(dst.get(k), dict) and isinstance(v, dict) and not isinstance(v, Tagged):
            merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def load_yaml_with_base(path, variables=None):
    """Load ``path`` resolving ``_BASE_`` (later bases and the file itself win).

    Args:
        variables: a set that collects the top-level keys defined with a YAML anchor
            (``eval_height: &eval_height 640``): ppdet's config variables.
    """
    cfg = _read_yaml(path, variables)
    bases = cfg.pop(BASE_KEY, []) or []
    merged = {}
    for base in bases:
        base = os.path.expanduser(base)
        if not os.path.isabs(base):
            base = os.path.join(os.path.dirname(path), base)
        merge(merged, load_yaml_with_base(base, variables))
    return merge(merged, cfg)


def parse_overrides(items):
    """``["a.b=1", "c=[1,2]"]`` -> nested dict; values parsed with ``yaml.safe_load``."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is malformed: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override '{item}' is malformed: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override for key '{key}': value {raw!r} is not valid "
                              f"YAML ({e.problem})") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override for key '{key}' conflicts with another override")
        node[parts[-1]] = value
    return out


def _suggest(key, choices):
    close = difflib.get_close_matches(key, sorted(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _module_args(schema):
    """Constructor argument names of a registered module, or None if it takes **kwargs."""
    cls = getattr(schema.pymodule, schema.name)
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name != "self"}


def _dataset_args(name):
    """Keys a ``{name: <dataset class>, ...}`` mapping may hold: the class's constructor
    arguments (``label_list`` for VOCDataSet ...), else the common ones."""
    from ppdet.data import source as sources
    cls = getattr(sources, str(name), None) if name else None
    if not isinstance(cls, type):
        return DATASET_KEYS
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return DATASET_KEYS | set(params) - {"self", "kwargs"}
    return (set(params) - {"self"}) | {"name"}


def validate(cfg, source="config", *, variables=()):
    """Raise ``ConfigError`` for any key nothing will read.

    Args:
        variables: top-level keys that are YAML-anchor variables, not settings.
    """
    registered = {k: v for k, v in workspace.global_config.items() if isinstance(v, SchemaDict)}
    shared = set()
    for schema in registered.values():
        shared.update(getattr(schema, "shared", []) or [])
    known_top = set(registered) | shared | TRAINER_GLOBALS | set(variables)
    for key, value in cfg.items():
        if key not in known_top:
            raise ConfigError(f"{source}: unknown key '{key}'{_suggest(key, known_top)}")
        if isinstance(value, Tagged):
            continue  # checked against its own class below
        if key.endswith("Reader") and isinstance(value, dict):
            _validate_reader(key, value, source)
        elif key.endswith("Dataset") and isinstance(value, dict):
            known = _dataset_args(value.get("name"))
            for sub in value:
                if sub not in known:
                    raise ConfigError(f"{source}: unknown key '{key}.{sub}'"
                                      f"{_suggest(sub, known)}")
        elif key in registered and isinstance(value, dict):
            args = _module_args(registered[key])
            if args is None:
                continue
            for sub in value:
                if sub not in args:
                    raise ConfigError(f"{source}: unknown key '{key}.{sub}': {key} takes "
                                      f"{sorted(args)}{_suggest(sub, args)}")
    for path, node in tagged_yaml.tagged_nodes(cfg):
        try:
            tagged_yaml.check_arguments(node, path)
        except TagError as e:
            raise ConfigError(str(e)) from None


def _validate_reader(key, reader, source):
    for sub, value in reader.items():
        if sub not in READER_KEYS:
            raise ConfigError(f"{source}: unknown key '{key}.{sub}'{_suggest(sub, READER_KEYS)}")
        if sub in ("sample_transforms", "batch_transforms"):
            for i, op in enumerate(value or []):
                if isinstance(op, Tagged):
                    raise ConfigError(f"{op.where}: '{key}.{sub}[{i}]': transforms are written "
                                      f"'- {op.tag[1:]}: {{...}}', not as a {op.tag} tag")
                if not isinstance(op, dict) or len(op) != 1:
                    raise ConfigError(f"{source}: '{key}.{sub}[{i}]' must be a one-key mapping")
                (name, args), = op.items()
                if not hasattr(ppdet_transforms, name):
                    raise ConfigError(f"{source}: unknown transform '{key}.{sub}[{i}].{name}'")
                cls = getattr(ppdet_transforms, name)
                params = inspect.signature(cls.__init__).parameters
                if any(p.kind is p.VAR_KEYWORD for p in params.values()):
                    continue
                for arg in (args or {}):
                    if arg not in params:
                        raise ConfigError(f"{source}: unknown key '{key}.{sub}[{i}].{name}.{arg}'"
                                          f"{_suggest(arg, params)}")


def load_config(path, overrides=None, *, reset=True, layers=(), name=None):
    """Load, override, validate and install a config into ppdet's workspace.

    Args:
        path: the leaf YAML file.
        overrides: ``["key=value", ...]`` or a nested dict.
        reset: clear ppdet's process-global config first (so nothing leaks between runs).
        layers: ``[(source, dict), ...]`` merged over the file before ``overrides`` (a
            ``--slim_config``'s model keys); each is checked under its own source name.
        name: the run name (``filename``: the run directory and export directory names);
            default the file's name without extension.

    Returns:
        (cfg, user_cfg): ppdet's global ``AttrDict`` and the plain merged user config
        (what ``dump_config`` writes).
    """
    variables = set()
    user = load_yaml_with_base(path, variables)
    for source, layer in layers:
        validate(layer, source=source, variables=variables)
        merge(user, layer)
    if isinstance(overrides, dict):
        over = overrides
    else:
        over = parse_overrides(overrides)
    merge(user, over)
    validate(user, source=f"{path}", variables=variables)
    if reset:
        reset_global_config()
    user["filename"] = name or os.path.splitext(os.path.basename(path))[0]
    try:
        installed = tagged_yaml.instantiate(user)
    except TagError as e:
        raise ConfigError(str(e)) from None
    for key in ("TrainDataset", "EvalDataset", "TestDataset"):
        if isinstance(installed.get(key), dict):
            installed[key] = build_dataset(key, installed[key], source=path)
    workspace.merge_config(installed)
    return workspace.global_config, user


def build_dataset(key, spec, source="config"):
    """``{name: COCODataSet, ...}`` -> a ppdet dataset instance (ppdet's other spelling,
    ``!COCODataSet {...}``, is built by ``tagged_yaml.instantiate``)."""
    from ppdet.data import source as sources
    spec = dict(spec)
    name = spec.pop("name", None)
    if not name:
        raise ConfigError(f"{source}: '{key}.name' is required (e.g. COCODataSet, ImageFolder)")
    cls = getattr(sources, name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{source}: unknown dataset class '{key}.name: {name}'")
    return cls(**spec)


def dump_config(user_cfg, path):
    """Write the fully merged user config next to a run's outputs."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        tagged_yaml.dump(user_cfg, f, sort_keys=False, default_flow_style=None)
