"""Reading ``torch.save`` files without torch.

``torch.save`` (PyTorch >= 1.6) writes a zip: ``<root>/data.pkl`` is a pickle whose tensors
are ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` calls, each
storage a persistent id ``('storage', torch.<Type>Storage, key, location, numel)`` naming
the raw little-endian bytes in ``<root>/data/<key>``. Here the pickle goes through the
restricted unpickler with the tensor rebuilders replaced by numpy stand-ins: storages
become flat numpy arrays, tensors strided copies of them (``numpy.ndarray``, C order;
bfloat16 widened to float32, since numpy has no bfloat16). Nothing from torch is
imported, and no other global is admitted.
"""
import zipfile

import numpy as np

from .restricted import RestrictedUnpickler, WeightsFormatError

__all__ = ['is_torch_zip', 'load_torch_zip']

_BFLOAT16 = 'bfloat16'
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': _BFLOAT16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class _StorageType:
    """Stand-in for ``torch.<Type>Storage``: only carries the element type."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None,
                    metadata=None):
    """``torch._utils._rebuild_tensor_v2`` on a flat numpy storage -> C-order ndarray."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    if any(s == 0 for s in size):
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if offset < 0 or last >= storage.size or min(stride) < 0:
        raise ValueError(f"tensor of size {size}, stride {stride}, offset {offset} "
                         f"exceeds its storage of {storage.size} elements")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    return data


def _torch_globals():
    table = {('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
             ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
             ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter}
    for name in _STORAGE_DTYPES:
        table[('torch', name)] = _StorageType(name)
    return table


def is_torch_zip(path):
    """True when ``path`` is a zip holding a ``*/data.pkl`` (the ``torch.save`` layout)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith('data.pkl') for n in z.namelist())


def _storage_reader(zf, root, source):
    cache = {}
    order = 'little'
    if f'{root}/byteorder' in zf.namelist():
        order = zf.read(f'{root}/byteorder').decode('ascii', 'replace').strip()
    if order not in ('little', 'big'):
        raise WeightsFormatError(f"{source}: unknown byteorder {order!r}")

    def load(pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageType)):
            raise WeightsFormatError(f"{source}: unexpected persistent id {pid!r:.80}")
        kind, key = pid[1], str(pid[2])
        if key not in cache:
            name = f'{root}/data/{key}'
            try:
                raw = zf.read(name)
            except KeyError:
                raise WeightsFormatError(f"{source}: storage {name} is missing") from None
            if kind.dtype == _BFLOAT16:
                bits = np.frombuffer(raw, dtype=np.dtype('uint16').newbyteorder(
                    '<' if order == 'little' else '>'))
                arr = (bits.astype(np.uint32) << 16).view(np.float32)
            else:
                dt = np.dtype(kind.dtype).newbyteorder('<' if order == 'little' else '>')
                arr = np.frombuffer(raw, dtype=dt).astype(np.dtype(kind.dtype).newbyteorder('='))
            cache[key] = arr
        return cache[key]
    return load


def load_torch_zip(path):
    """Read a ``torch.save`` zip into plain Python / numpy objects (see module docstring).

    Args:
        path (str): the ``.pth`` / ``.pt`` file.

    Returns:
        object: the saved object, tensors as ``numpy.ndarray``.

    Raises:
        WeightsFormatError: not a torch zip, or a corrupt one.
        UnsafeWeightsError: the pickle asks for a global outside the allow-list.
    """
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith('/data.pkl') or n == 'data.pkl']
        if len(pkl) != 1:
            raise WeightsFormatError(f"{path}: expected one data.pkl in the zip, found {len(pkl)}")
        root = pkl[0][:-len('/data.pkl')] if '/' in pkl[0] else ''
        with zf.open(pkl[0]) as f:
            return RestrictedUnpickler(f, path, extra=_torch_globals(),
                                       persistent=_storage_reader(zf, root, path)).load_checked()
