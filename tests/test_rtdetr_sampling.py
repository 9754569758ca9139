"""Deformable-attention sampling: bilinear (default) vs nearest-pixel (discrete)."""
import numpy as np
import paddle
import pytest

from ppdet_ext.modeling.rtdetr.deformable_attention import ExtMSDeformableAttention
from ppdet_ext.modeling.rtdetr.sampling import sample_discrete
from rtdetr_helpers import build_tiny_model, make_batch

SHAPES = [(5, 7), (3, 4), (2, 6)]   # rectangular, both orientations
POINTS = [3, 2, 4]                  # per-level sampling points


def _pixel_centre_locations(rng, b, lq, heads):
    locs = []
    for (h, w), p in zip(SHAPES, POINTS):
        ix = rng.randint(0, w, size=(b, lq, heads, p))
        iy = rng.randint(0, h, size=(b, lq, heads, p))
        locs.append(np.stack([(ix + 0.5) / w, (iy + 0.5) / h], -1))
    return paddle.to_tensor(np.concatenate(locs, 3).astype('float32'))


def test_default_and_discrete_agree_on_pixel_centres():
    rng = np.random.RandomState(0)
    b, lq, heads, dim = 2, 5, 2, 16
    attn = {m: ExtMSDeformableAttention(dim, heads, len(SHAPES), POINTS, method=m)
            for m in ('default', 'discrete')}
    length = sum(h * w for h, w in SHAPES)
    value = paddle.to_tensor(rng.randn(b, length, heads, dim // heads).astype('float32'))
    loc = _pixel_centre_locations(rng, b, lq, heads)
    weights = paddle.nn.functional.softmax(
        paddle.to_tensor(rng.randn(b, lq, heads, sum(POINTS)).astype('float32')), -1)
    out = {m: a.attend(value, SHAPES, loc, weights).numpy() for m, a in attn.items()}
    np.testing.assert_allclose(out['discrete'], out['default'], rtol=1e-5, atol=1e-5)
    # off the centres they differ (bilinear mixes neighbours), so the check above can fail
    shifted = loc + 0.3 / 7
    a = attn['default'].attend(value, SHAPES, shifted, weights).numpy()
    d = attn['discrete'].attend(value, SHAPES, shifted, weights).numpy()
    assert np.abs(a - d).max() > 1e-3


def test_discrete_clips_x_against_width_and_y_against_height():
    h, w = 2, 6
    value = paddle.arange(h * w, dtype='float32').reshape([1, 1, h * w])   # value = y*w + x
    loc = paddle.to_tensor([[[[0.99, 0.25], [1.7, 0.25], [-0.4, 0.9], [0.5, 1.8]]]],
                           dtype='float32')                                 # [1, 1, 4, 2]
    got = sample_discrete(value, h, w, loc).numpy().reshape([-1])
    # x=0.99*6 -> 5, x=1.7 -> clipped to 5 (not to h-1=1), x<0 -> 0, y=1.8 -> clipped to 1
    assert got.tolist() == [5.0, 5.0, 6.0, 9.0]


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
