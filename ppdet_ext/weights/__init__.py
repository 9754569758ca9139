"""Weights and training states from disk, read without running code from the file.

    from ppdet_ext.weights import load_state
    state = load_state('model.pdparams')      # or .pdopt / .pdema / a torch .pth

:func:`load_state` reads ``paddle.save`` pickles and ``torch.save`` zips (no torch needed)
through one restricted unpickler (:mod:`.restricted`) that admits only arrays, numbers,
strings and containers, and refuses anything else with a one-line
:class:`UnsafeWeightsError` naming the file and the global it asked for.
"""
from .loader import load_state
from .restricted import UnsafeWeightsError, WeightsFormatError

__all__ = ['load_state', 'UnsafeWeightsError', 'WeightsFormatError']
