"""Deformable-attention sampling: bilinear (default) vs nearest-pixel (discrete)."""
import numpy as np
import paddle
import pytest

from ppdet_ext.modeling.rtdetr.deformable_attention import ExtMSDeformableAttention
from ppdet_ext.modeling.rtdetr.sampling import sample_discrete
from rtdetr_helpers import build_tiny_model, make_batch

SHAPES = [(5, 7), (3, 4), (2, 6)]   # rectangular, both orientations
POINTS = [3, 2, 4]                  # per-level sampling points


def _pixel_corner_locations(rng, b, lq, heads):
    """Locations ``k / size`` on pixel corners (integers in pixel units)."""
    locs = []
    for (h, w), p in zip(SHAPES, POINTS):
        ix = rng.randint(0, w, size=(b, lq, heads, p))
        iy = rng.randint(0, h, size=(b, lq, heads, p))
        locs.append(np.stack([ix / w, iy / h], -1))
    return np.concatenate(locs, 3).astype('float32')


def _half_pixel(b, lq, heads):
    """``(0.5 / w, 0.5 / h)`` per level, broadcast to ``[b, lq, heads, sum(P), 2]``."""
    half = np.concatenate([np.tile([[0.5 / w, 0.5 / h]], (p, 1))
                           for (h, w), p in zip(SHAPES, POINTS)]).astype('float32')
    return np.broadcast_to(half, (b, lq, heads, sum(POINTS), 2))


def test_discrete_at_corners_reads_bilinear_at_centres():
    """The reference rounding ``floor(u * size + 0.5)``: discrete sampling at ``k / size``
    reads pixel ``k``, which bilinear sampling reads alone at its centre ``(k + 0.5) / size``."""
    rng = np.random.RandomState(0)
    b, lq, heads, dim = 2, 5, 2, 16
    attn = {m: ExtMSDeformableAttention(dim, heads, len(SHAPES), POINTS, method=m)
            for m in ('default', 'discrete')}
    length = sum(h * w for h, w in SHAPES)
    value = paddle.to_tensor(rng.randn(b, length, heads, dim // heads).astype('float32'))
    corner = _pixel_corner_locations(rng, b, lq, heads)
    half = _half_pixel(b, lq, heads)
    weights = paddle.nn.functional.softmax(
        paddle.to_tensor(rng.randn(b, lq, heads, sum(POINTS)).astype('float32')), -1)
    discrete = attn['discrete'].attend(value, SHAPES, paddle.to_tensor(corner), weights).numpy()
    centre = attn['default'].attend(value, SHAPES, paddle.to_tensor(corner + half),
                                    weights).numpy()
    np.testing.assert_allclose(discrete, centre, rtol=1e-5, atol=1e-5)
    # just below half a pixel past the corner the index stays k; at or past it, k + 1
    below = attn['discrete'].attend(value, SHAPES, paddle.to_tensor(corner + 0.99 * half),
                                    weights).numpy()
    np.testing.assert_array_equal(below, discrete)
    past = attn['discrete'].attend(value, SHAPES, paddle.to_tensor(corner + 1.01 * half),
                                   weights).numpy()
    assert np.abs(past - discrete).max() > 1e-3
    # bilinear off the centres mixes neighbours, so the first check can fail
    off = attn['default'].attend(value, SHAPES, paddle.to_tensor(corner), weights).numpy()
    assert np.abs(off - discrete).max() > 1e-3


def test_discrete_rounds_half_up_and_clips_x_against_width_and_y_against_height():
    h, w = 2, 6
    value = paddle.arange(h * w, dtype='float32').reshape([1, 1, h * w])   # value = y*w + x
    loc = paddle.to_tensor([[[[0.99, 0.2], [1.7, 0.2], [-0.4, 0.9], [0.5, 1.8],
                              [0.25, 0.24], [0.08, 0.0]]]], dtype='float32')  # [1, 1, 6, 2]
    got = sample_discrete(value, h, w, loc).numpy().reshape([-1])
    # in pixels: x = 5.94 -> 6, clipped to 5 (w-1, not h-1 = 1), y = 0.4 -> 0; x = 10.2 -> 5;
    # x < 0 -> 0, y = 1.8 -> 2 clipped to 1; x = 3, y = 3.6 -> 1; x = 1.5 -> 2 (half up),
    # y = 0.48 -> 0; x = 0.48 -> 0, y = 0
    assert got.tolist() == [5.0, 5.0, 6.0, 9.0, 2.0, 0.0]


def test_discrete_freezes_offsets_and_trains_the_rest():
    model = build_tiny_model(decoder={'sampling_method': 'discrete'})
    model.train()
    model(make_batch(64, 96))['loss'].backward()
    offsets = [p for n, p in model.named_parameters() if 'sampling_offsets' in n]
    assert offsets and all(p.stop_gradient for p in offsets)
    assert all(p.grad is None for p in offsets)
    missing = [n for n, p in model.named_parameters() if not p.stop_gradient and p.grad is None]
    assert missing == []


def _static_op_types(model, hw):
    from ppdet_ext.export.exporter import static_program
    program = static_program(model, [1, 3, *hw])
    return {op.type for blk in program.blocks for op in blk.ops}


@pytest.mark.parametrize('method', ['default', 'discrete'])
def test_discrete_graph_has_no_grid_sample(method):
    ops = _static_op_types(build_tiny_model(decoder={'sampling_method': method}), (96, 128))
    assert 'gather_nd' not in ops
    assert ('grid_sampler' in ops) == (method == 'default')
