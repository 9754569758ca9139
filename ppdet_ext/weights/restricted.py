"""A pickle reader that builds only plain data: the allow-list shared by both weight formats.

A pickle names every callable it needs as ``module.name`` (a "global"); the standard
unpickler imports and calls whatever is named, which is how a crafted ``.pdparams`` or
``.pth`` runs code (``os.system`` through ``__reduce__``). :class:`RestrictedUnpickler`
resolves a global only through an explicit table of safe stand-ins, and refuses every
other global before anything is called. The table holds exactly what ``paddle.save`` and
``torch.save`` write for model, optimizer and LR-scheduler states (measured: see
``tests/test_weights_loader.py``):

* containers: ``builtins.tuple`` / ``list`` / ``dict`` / ``set`` / ``frozenset``,
  ``collections.OrderedDict`` / ``Counter`` (torch ``MultiStepLR`` milestones);
* ``_codecs.encode`` (protocol-2 byte strings, latin-1 only);
* numpy arrays and scalars: ``numpy.core.multiarray._reconstruct`` (ndarray only),
  ``numpy.ndarray``, ``numpy.dtype`` (no object dtype), ``numpy.core.multiarray.scalar``
  (numpy 2 spells the module ``numpy._core``);
* ``builtins.eval``, but only as the one call ``paddle.save`` emits for a static-graph
  tensor nested in a container, ``eval('data', {'data': array})``, which is answered
  without evaluating anything;
* format-specific globals a subclass adds (torch's tensor rebuilders, see
  :mod:`.torch_format`).
"""
import codecs
import collections
import pickle

import numpy as np

__all__ = ['RestrictedUnpickler', 'UnsafeWeightsError', 'WeightsFormatError']


class WeightsFormatError(ValueError):
    """The file is not a weights file this loader reads (message names the file)."""


class UnsafeWeightsError(WeightsFormatError):
    """The file asks for a global outside the allow-list (message names file and global)."""


def _encode(text, encoding='latin1'):
    if encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding)


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _dtype(spec, align=False, copy=False):
    dt = np.dtype(spec, align, copy)
    if dt.hasobject:
        raise pickle.UnpicklingError("arrays of Python objects (dtype 'O')")
    return dt


def _scalar(dtype, data=None):
    if dtype.hasobject:
        raise pickle.UnpicklingError("numpy object scalar")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _paddle_lodtensor(expression, namespace=None, *rest):
    """``paddle.save``'s reduction of a static-graph tensor is ``eval('data', {'data': a})``:
    return ``a`` for exactly that call, evaluate nothing."""
    if (rest or expression != 'data' or not isinstance(namespace, dict)
            or set(namespace) != {'data'} or not isinstance(namespace['data'], np.ndarray)):
        raise pickle.UnpicklingError("builtins.eval other than paddle.save's tensor form")
    return namespace['data']


_SAFE = {
    ('builtins', 'tuple'): tuple, ('builtins', 'list'): list, ('builtins', 'dict'): dict,
    ('builtins', 'set'): set, ('builtins', 'frozenset'): frozenset,
    ('builtins', 'eval'): _paddle_lodtensor,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('collections', 'Counter'): collections.Counter,
    ('_codecs', 'encode'): _encode,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): _dtype,
}
for _core in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    _SAFE[(_core, '_reconstruct')] = _reconstruct
    _SAFE[(_core, 'scalar')] = _scalar
# protocol 2 writes Python 2 names; pickle's own compat mapping turns them into these,
# but only when fix_imports is on and the name is known, so map them explicitly as well
for (_mod, _name), _fn in list(_SAFE.items()):
    if _mod == 'builtins':
        _SAFE[('__builtin__', _name)] = _fn


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come from the allow-list only.

    Args:
        file: binary file object positioned at the pickle.
        source (str): file name used in error messages.
        extra (dict): ``(module, name) -> callable`` added to the allow-list.
        persistent (callable): answers persistent ids (torch storages); none by default.
    """

    def __init__(self, file, source, extra=None, persistent=None):
        super().__init__(file)
        self.source = source
        self.allowed = {**_SAFE, **(extra or {})}
        self.persistent = persistent

    def find_class(self, module, name):
        fn = self.allowed.get((module, name))
        if fn is None:
            raise UnsafeWeightsError(
                f"{self.source}: refused to load: it asks for the Python global "
                f"'{module}.{name}', which weights files never need (only arrays, numbers, "
                "strings and containers are read; nothing was executed)")
        return fn

    def persistent_load(self, pid):
        if self.persistent is not None:
            return self.persistent(pid)
        raise WeightsFormatError(
            f"{self.source}: the pickle refers to external storage ({pid!r:.60}); "
            "only paddle.save and torch.save (zip) files are read")

    def load_checked(self):
        """``load()`` with every refusal or corrupt stream turned into a one-line
        :class:`WeightsFormatError` naming the file."""
        try:
            return self.load()
        except WeightsFormatError:
            raise
        except pickle.UnpicklingError as e:
            raise UnsafeWeightsError(f"{self.source}: refused to load: {e}") from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                MemoryError) as e:
            raise WeightsFormatError(
                f"{self.source}: not a readable weights pickle "
                f"({type(e).__name__}: {e}); is the file complete?") from None
