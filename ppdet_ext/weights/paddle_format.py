"""Reading ``paddle.save`` files (``.pdparams``, ``.pdopt``, ``.pdema``) without unpickling code.

``paddle.save`` (Paddle 2.x, pickle protocol 2-4) writes a plain pickle. Measured on Paddle
2.6.2 (``tests/test_weights_loader.py`` saves real model and optimizer states):

* a model state: ``{name: ndarray, 'StructuredToParameterName@@': {name: param_name}}``;
* an optimizer state: ``{accumulator: (param_name, ndarray), 'LR_Scheduler': {...},
  ...}`` -- tensors nested in containers are reduced to ``(name, ndarray)`` tuples, which
  ``paddle.load`` turns back into tensors and :func:`load_paddle_pickle` into the ndarray;
* a static-graph tensor nested in a container: ``eval('data', {'data': ndarray})``
  (answered by the restricted unpickler without evaluating anything);
* protocol 2/3 files split arrays over 2**30 bytes into parts listed under
  ``'UnpackBigParamInfor@@'``; they are joined again here.
"""
import numpy as np

from .restricted import RestrictedUnpickler, WeightsFormatError

__all__ = ['load_paddle_pickle']

_BIG_PARAM_KEY = 'UnpackBigParamInfor@@'


def _is_tensor_tuple(obj):
    """``paddle.save``'s reduction of a tensor inside a container (``paddle.load``'s test)."""
    return (type(obj) is tuple and len(obj) == 2 and isinstance(obj[0], str)
            and isinstance(obj[1], np.ndarray))


def _untuple(obj):
    if _is_tensor_tuple(obj):
        return obj[1]
    if isinstance(obj, dict):
        return {k: _untuple(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_untuple(v) for v in obj)
    return obj


def _join_big_params(state, source):
    info = state.pop(_BIG_PARAM_KEY)
    for key, spec in info.items():
        try:
            parts = [state.pop(name) for name in spec['slices']]
            state[key] = np.concatenate(parts).reshape(spec['OriginShape'])
        except (KeyError, ValueError, TypeError) as e:
            raise WeightsFormatError(f"{source}: split parameter {key!r} cannot be joined "
                                     f"({type(e).__name__}: {e})") from None
    return state


def load_paddle_pickle(path):
    """Read a ``paddle.save`` pickle into plain Python / numpy objects.

    Args:
        path (str): the file.

    Returns:
        object: what was saved, tensors as ``numpy.ndarray``.

    Raises:
        WeightsFormatError: not a pickle, or a truncated one.
        UnsafeWeightsError: the pickle asks for a global outside the allow-list.
    """
    with open(path, 'rb') as f:
        head = f.read(2)
        if len(head) < 2 or head[0] != 0x80 or head[1] > 5:
            raise WeightsFormatError(
                f"{path}: not a paddle.save / torch.save file (no pickle header); "
                "a Paddle inference model (.pdmodel/.pdiparams) is not a weights file")
        f.seek(0)
        obj = RestrictedUnpickler(f, path).load_checked()
    if isinstance(obj, dict) and _BIG_PARAM_KEY in obj:
        obj = _join_big_params(dict(obj), path)
    return _untuple(obj)
