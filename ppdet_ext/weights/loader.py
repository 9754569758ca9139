"""``load_state``: the one entry point for reading weights and training states from disk."""
import os

import numpy as np

from .paddle_format import load_paddle_pickle
from .restricted import WeightsFormatError
from .torch_format import is_torch_zip, load_torch_zip

__all__ = ['load_state']

_LEAF_TYPES = (str, bytes, int, float, bool, type(None), np.ndarray)


def _plain(obj, source, where='<root>'):
    """Normalise to the types :func:`load_state` documents (``where`` names the place
    in the object for error messages)."""
    if isinstance(obj, dict):
        return {k: _plain(v, source, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, source, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise WeightsFormatError(f"{source}: {where} is an array of Python objects")
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return [_plain(v, source, where) for v in sorted(obj, key=repr)]
    if isinstance(obj, complex) or isinstance(obj, _LEAF_TYPES):
        return obj
    raise WeightsFormatError(f"{source}: {where} holds a {type(obj).__name__}, "
                             "which a weights file does not contain")


def load_state(path):
    """Read a weights or training-state file without running any code from it.

    Formats: ``paddle.save`` pickles (``.pdparams``, ``.pdopt``, ``.pdema``; Paddle 2.x,
    protocol 2-4) and ``torch.save`` zips (``.pth``/``.pt``, PyTorch >= 1.6), told apart by
    content, not by extension. torch is not needed.

    Args:
        path (str): the file.

    Returns:
        object: what was saved, usually a ``dict``, built from exactly these types:
        ``dict`` (``OrderedDict``/``Counter`` become ``dict``), ``list``, ``tuple``,
        ``str``, ``bytes``, ``int``, ``float``, ``complex``, ``bool``, ``None`` and
        ``numpy.ndarray`` (C-order, numeric or bool dtype, never object). Numpy scalars
        become Python numbers, sets become lists. Paddle tensors nested in containers
        (optimizer accumulators) and torch tensors both become ``numpy.ndarray``; torch
        bfloat16 becomes float32.

    Raises:
        WeightsFormatError: (a ``ValueError``) missing file, unknown format, truncated
            file; the message is one line naming the file.
        UnsafeWeightsError: (a ``WeightsFormatError``) the file asks for a Python global
            outside the allow-list (:mod:`ppdet_ext.weights.restricted`); the message
            names the file and the global, and nothing from the file was executed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsFormatError(f"{path}: no such weights file")
    if is_torch_zip(path):
        obj = load_torch_zip(path)
    else:
        obj = load_paddle_pickle(path)
    return _plain(obj, path)
