"""Backbone weights of the RT-DETRv2 reference test data, rebuilt from their names.

The test checkpoints in ``tests/data/rtdetrv2/`` leave the ResNet-18 backbone out (11 M
parameters would be 45 MB); the reference ran with the tensors this module makes, seeded
by each tensor's name in its own layout, so a test rebuilds them exactly. Pure numpy: the
reference generators (``scripts/rtdetrv2_reference.py`` in a torch venv,
``scripts/rtdetrv2_paddledet_reference.py``) import it too.
"""
import zlib

import numpy as np

__all__ = ['synthetic_tensor', 'synthetic_backbone']


def synthetic_tensor(name, shape, layout):
    """Deterministic tensor for parameter ``name`` (``layout``: ``torch`` or ``paddle``).

    Conv kernels ``N(0, 1/fan_in)``, BatchNorm scale ``1 + N(0, 0.1)``, shift and running
    mean ``N(0, 0.1)``, running variance ``U[0.5, 1.5)``, batch counters 0.
    """
    shape = tuple(int(s) for s in shape)
    if name.endswith('num_batches_tracked'):
        return np.zeros(shape, 'int64')
    rng = np.random.RandomState(zlib.crc32(f'{layout}:{name}'.encode()))
    if name.endswith(('running_var', '_variance')):
        return (0.5 + rng.random_sample(shape)).astype('float32')
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype('float32')
    if name.endswith('weight'):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype('float32')
    return (0.1 * rng.standard_normal(shape)).astype('float32')


def synthetic_backbone(shapes, layout):
    """``{name: tensor}`` for every ``backbone.`` entry of ``shapes`` ``{name: shape}``."""
    return {n: synthetic_tensor(n, s, layout) for n, s in shapes.items()
            if n.startswith('backbone.')}
