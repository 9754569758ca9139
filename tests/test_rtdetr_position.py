"""AIFI's 2-D sin-cos position embedding: channel layout pinned on a hand-computed grid."""
import math

import numpy as np
import paddle

from ppdet_ext.modeling.rtdetr.position import sincos_2d_embedding


def test_channel_layout_on_a_2x3_grid():
    """dim 8, temperature 10000: two frequencies, 1 and 10000 ** -0.5 = 0.01. Token
    ``k = y * 3 + x``; channels ``[sin y, sin .01y, cos y, cos .01y, sin x, sin .01x, cos x,
    cos .01x]`` (row first, then column)."""
    got = sincos_2d_embedding(2, 3, 8).numpy()
    assert got.shape == (1, 6, 8)
    s, c = math.sin, math.cos
    want = [
        # y = 0
        [0, 0, 1, 1, 0, 0, 1, 1],
        [0, 0, 1, 1, s(1), s(.01), c(1), c(.01)],
        [0, 0, 1, 1, s(2), s(.02), c(2), c(.02)],
        # y = 1
        [s(1), s(.01), c(1), c(.01), 0, 0, 1, 1],
        [s(1), s(.01), c(1), c(.01), s(1), s(.01), c(1), c(.01)],
        [s(1), s(.01), c(1), c(.01), s(2), s(.02), c(2), c(.02)],
    ]
    np.testing.assert_allclose(got[0], np.array(want), rtol=0, atol=1e-6)


def _reference_formula(side, dim, temperature=10000.0):
    """The published models' embedding on a ``side x side`` map: token ``k`` gets
    ``k // side`` in the first half of the channels and ``k % side`` in the second."""
    q = dim // 4
    omega = 1.0 / temperature ** (np.arange(q) / q)
    k = np.arange(side * side)
    first, second = np.outer(k // side, omega), np.outer(k % side, omega)
    return np.concatenate([np.sin(first), np.cos(first), np.sin(second), np.cos(second)], 1)


def test_equals_the_published_formula_on_square_maps():
    for side, dim in [(4, 16), (20, 256)]:
        got = sincos_2d_embedding(side, side, dim).numpy()[0]
        np.testing.assert_allclose(got, _reference_formula(side, dim), rtol=0, atol=2e-5)


def test_tensor_sizes_give_the_int_result():
    """Dynamic-shape export passes 0-D int tensors."""
    want = sincos_2d_embedding(3, 5, 16).numpy()
    got = sincos_2d_embedding(paddle.to_tensor(3, dtype='int32'),
                              paddle.to_tensor(5, dtype='int32'), 16).numpy()
    np.testing.assert_array_equal(got, want)
