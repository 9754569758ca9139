"""Reading and writing config YAML: safe YAML plus ppdet's registered ``!Tag`` objects.

ppdet registers a YAML constructor ``!Name`` for every class decorated with
``ppdet.core.workspace.serializable`` (schedulers such as ``!PiecewiseDecay`` and
``!LinearWarmup``, datasets, transforms, losses, slim methods, ...) and reads configs with
PyYAML's full ``yaml.Loader``, which also builds ``!!python/object/apply:os.system`` and
friends — running code named by the file. Here a config is read with ``yaml.SafeLoader``
plus exactly the tags the installed ppdet (and ``ppdet_ext``) registered, enumerated from
those registrations (:func:`registered_tags`), never from a hand-written list. Everything
else — ``!!python/*``, unknown ``!Tags``, and the two kinds of registered tag that are not
plain objects (``!Callable`` and ``@serializable`` functions, see :func:`refusal`) — is an
error naming the file, line and tag.

A tag is read into a :class:`Tagged` node (a dict of the constructor's keyword arguments
that remembers its class and where it was written), not into an object, so ``_BASE_``
merging, ``-o`` overrides and the strict key check see plain data. :func:`instantiate`
builds the objects when a config is installed into ppdet's workspace; :func:`dump` writes
the tags back, so a run's ``config.yml`` reads back through :func:`load`.
"""
import difflib
import inspect

import yaml

from ppdet.core.config import yaml_helpers

_CORE = "tag:yaml.org,2002:"

# Registered tags that are refused anyway, and why (the message a user sees).
_CALLABLE_REASON = ("imports and calls any Python function named in the file "
                    "(full_type), which a config must not be able to do")
_FUNCTION_REASON = ("names a function, not a class: ppdet's loader would call it while "
                    "reading the file; no detection config needs that")


class TagError(ValueError):
    """A tag in a config file is refused or malformed; the message names file and line."""


class Tagged(dict):
    """A ``!Name`` node read from YAML: its keyword arguments (the dict items), its
    positional arguments (``args``, from ``!Name [a, b]``), the class it names (``cls``)
    and where it was written (``where``: ``file:line``)."""

    def __init__(self, tag, cls, kwargs=None, *, args=(), where=""):
        super().__init__(kwargs or {})
        self.tag = tag
        self.cls = cls
        self.args = list(args)
        self.where = where

    def __repr__(self):
        return f"{self.tag}({', '.join(map(repr, self.args))}{dict.__repr__(self)})"


def _shown(tag):
    """A tag as the user wrote it (``tag:yaml.org,2002:python/x`` -> ``!!python/x``)."""
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


def _target(constructor, name):
    """The class or function a ppdet ``@serializable`` constructor builds (its closure)."""
    for cell in constructor.__closure__ or ():
        value = cell.cell_contents
        if getattr(value, "__name__", None) == name and callable(value):
            return value
    return None


def registered_tags():
    """``{"!Name": class_or_function}`` for every ``@serializable`` registration of the
    installed ppdet and of ``ppdet_ext`` (read from PyYAML's constructor table, where
    ``serializable`` puts them)."""
    out = {}
    for tag, constructor in yaml.Loader.yaml_constructors.items():
        if not (isinstance(tag, str) and tag.startswith("!")):
            continue
        if getattr(constructor, "__module__", None) != yaml_helpers.__name__:
            continue
        target = _target(constructor, tag[1:])
        if target is not None:
            out[tag] = target
    return out


def refusal(tag, target):
    """Why a registered tag is refused, or None if it builds a plain object."""
    if target is yaml_helpers.Callable:
        return _CALLABLE_REASON
    if not inspect.isclass(target):
        return _FUNCTION_REASON
    return None


def allowed_tags():
    """``{"!Name": class}``: the registered tags a config may use."""
    return {t: c for t, c in registered_tags().items() if refusal(t, c) is None}


class _Loader(yaml.SafeLoader):
    """SafeLoader + registered tags; ``source`` is set per file for messages. Remembers
    which nodes carry an anchor (``&name``), for :func:`load_document`."""

    source = "<config>"

    def __init__(self, stream):
        super().__init__(stream)
        self.anchored = set()

    def compose_scalar_node(self, anchor):
        return self._note(super().compose_scalar_node(anchor), anchor)

    def compose_sequence_node(self, anchor):
        return self._note(super().compose_sequence_node(anchor), anchor)

    def compose_mapping_node(self, anchor):
        return self._note(super().compose_mapping_node(anchor), anchor)

    def _note(self, node, anchor):
        if anchor is not None:
            self.anchored.add(id(node))
        return node


def _construct_tagged(loader, node):
    where = f"{loader.source}:{node.start_mark.line + 1}"
    tag = node.tag
    registered = registered_tags()
    target = registered.get(tag)
    if target is None:
        if tag.startswith("!") and not tag.startswith("!!"):
            close = difflib.get_close_matches(tag, sorted(allowed_tags()), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise TagError(f"{where}: unknown tag '{tag}': not a class ppdet or ppdet_ext "
                           f"registers as @serializable{hint}")
        raise TagError(f"{where}: tag '{_shown(tag)}' is not allowed: configs are read as "
                       "safe YAML plus ppdet's registered !Tags (e.g. !PiecewiseDecay)")
    reason = refusal(tag, target)
    if reason:
        raise TagError(f"{where}: tag '{tag}' is refused: it {reason}")
    if isinstance(node, yaml.MappingNode):
        return Tagged(tag, target, loader.construct_mapping(node, deep=True), where=where)
    if isinstance(node, yaml.SequenceNode):
        return Tagged(tag, target, args=loader.construct_sequence(node, deep=True), where=where)
    if loader.construct_scalar(node) in ("", None):
        return Tagged(tag, target, where=where)  # bare `!Permute`: no arguments
    raise TagError(f"{where}: '{tag}' must be followed by a mapping of its arguments "
                   f"(e.g. {tag} {{...}}), not a scalar")


_Loader.add_constructor(None, _construct_tagged)  # every tag SafeLoader does not know


def load(stream, source):
    """Parse YAML text/stream from ``source`` (a file name, for messages)."""
    return load_document(stream, source)[0]


def load_document(stream, source):
    """Like :func:`load`, plus the top-level keys whose value carries a YAML anchor.

    ppdet configs use such keys as variables (``eval_height: &eval_height 640``, then
    ``*eval_height`` further down); they are settings nobody reads, and not typos.

    Returns:
        (data, anchored_keys)
    """
    loader = _Loader(stream)
    loader.source = source
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        anchored = set()
        if isinstance(node, yaml.MappingNode):
            anchored = {k.value for k, v in node.value
                        if id(v) in loader.anchored and isinstance(k, yaml.ScalarNode)}
        return data, anchored
    finally:
        loader.dispose()


def check_arguments(node, path):
    """Raise ``TagError`` for keyword arguments ``node.cls`` does not take (with close
    matches) and for required arguments it is not given. ``path`` names the node
    (``LearningRate.schedulers[0]``)."""
    params = inspect.signature(node.cls).parameters
    kinds = {p.kind for p in params.values()}
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        for key in node:
            if key not in params:
                close = difflib.get_close_matches(str(key), sorted(params), n=3, cutoff=0.6)
                hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
                raise TagError(f"{node.where}: unknown key '{path}.{key}': {node.tag} takes "
                               f"{sorted(params)}{hint}")
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return
    positional = [n for n, p in params.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    given = set(positional[:len(node.args)]) | set(node)
    missing = [n for n, p in params.items() if p.default is p.empty and n not in given
               and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if missing:
        raise TagError(f"{node.where}: '{path}' ({node.tag}) is missing required "
                       f"argument(s) {missing}")


def tagged_nodes(value, path=""):
    """Yield ``(path, node)`` for every :class:`Tagged` inside ``value`` (dicts, lists)."""
    if isinstance(value, Tagged):
        yield path, value
        items = [(f"{path}.{k}", v) for k, v in value.items()]
        items += [(f"{path}[{i}]", v) for i, v in enumerate(value.args)]
    elif isinstance(value, dict):
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        return
    for sub_path, sub in items:
        yield from tagged_nodes(sub, sub_path)


def instantiate(value):
    """A copy of ``value`` with every :class:`Tagged` node replaced by the object it names
    (innermost first), as ppdet's loader would have built it."""
    if isinstance(value, Tagged):
        args = [instantiate(a) for a in value.args]
        kwargs = {k: instantiate(v) for k, v in value.items()}
        try:
            return value.cls(*args, **kwargs)
        except Exception as e:  # the user's arguments, not our bug: name where they are
            raise TagError(f"{value.where}: building {value.tag} failed: "
                           f"{type(e).__name__}: {e}") from None
    if isinstance(value, dict):
        return {k: instantiate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [instantiate(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    pass


def _represent_tagged(dumper, node):
    if node.args:
        return dumper.represent_sequence(node.tag, node.args)
    return dumper.represent_mapping(node.tag, dict(node))


_Dumper.add_representer(Tagged, _represent_tagged)


def dump(data, stream, **kwargs):
    """``yaml.safe_dump`` that writes :class:`Tagged` nodes back as ``!Name`` tags."""
    return yaml.dump(data, stream, Dumper=_Dumper, **kwargs)
