"""Region arithmetic of the padding masks (``ppdet_ext/export/padding_mask/region.py``): each
image's valid extent, its rounding to the pad stride, the stride of a feature map, and the
per-axis cell masks. Exact integer answers on hand-made batches."""
import numpy as np
import paddle
import pytest

from ppdet_ext.export import padding_mask as pm
from ppdet_ext.export.padding_mask.region import _stride_graph, _stride_int


def test_valid_extent_on_hand_made_batches():
    b = np.zeros((5, 3, 12, 16), np.float32)
    b[0, :, :7, :9] = 1.0                      # plain 7 x 9 image
    b[1, :, :, :] = -0.5                       # fills the canvas (negative values)
    b[2, 1, 4, 10] = 3.0                       # one pixel, one channel -> 5 x 11
    b[3, :, :9, :5] = 1.0
    b[3, :, 2:6, :] = 0.0                      # zero rows inside the image do not cut it
    b[3, 0, 0, 0], b[3, 1, 0, 0], b[3, 2, 0, 0] = 1.0, -1.0, 0.0   # channels sum to 0: kept
    # b[4] all zero (a warm-up batch): 0 x 0, no division by zero downstream
    vh, vw = pm.valid_extent(paddle.to_tensor(b))
    assert vh.numpy().tolist() == [7, 12, 5, 9, 0]
    assert vw.numpy().tolist() == [9, 16, 11, 5, 0]
    mask, share = pm.PaddingExtent(paddle.to_tensor(b)).masks(None, paddle.ones([5, 4, 3, 4]))
    cells = [2 * 3, 3 * 4, 2 * 3, 3 * 2, 0]                            # stride 4: ceil(v / 4)
    assert mask.shape == [5, 1, 3, 4] and share.shape == [5, 1, 1, 1]
    assert mask.numpy().sum(axis=(1, 2, 3)).tolist() == cells
    np.testing.assert_allclose(share.numpy().ravel(), [max(c, 1) / 12 for c in cells], rtol=1e-6)


def test_round_to_grows_each_region_to_the_pad_stride():
    b = np.zeros((3, 3, 12, 16), np.float32)
    b[0, :, :7, :9] = 1.0
    b[1, :, :12, :13] = 1.0
    b[2, :, :1, :1] = 1.0
    ext = pm.PaddingExtent(paddle.to_tensor(b), round_to=8)
    assert ext.valid_h.numpy().tolist() == [8, 12, 8]          # clipped to the canvas
    assert ext.valid_w.numpy().tolist() == [16, 16, 8]


@pytest.mark.parametrize("size_in, size_feat, stride", [
    (416, 13, 32), (416, 7, 64), (448, 7, 64), (100, 13, 8), (200, 1, 256), (96, 96, 1),
    (100, 6, None)])
def test_stride_from_sizes(size_in, size_feat, stride):
    assert _stride_int(size_in, size_feat) == stride
    got = _stride_graph(paddle.to_tensor(float(size_in)), paddle.to_tensor(float(size_feat)))
    assert float(got) == (stride or 0)


@pytest.mark.parametrize("canvas", [416, 448, 640])
def test_axis_mask_counts_are_canvas_independent(canvas):
    """Stride 64 of a 416 canvas (h = 7, not 416 / 64): still ceil(v / 64) valid cells."""
    valid = paddle.to_tensor([300.0, 416.0, 1.0, 0.0])
    keep, count = pm.axis_mask(valid, 64, -(-canvas // 64))
    assert keep.astype("int32").sum(axis=1).numpy().tolist() == [5, 7, 1, 0]
    assert count.numpy().tolist() == [5, 7, 1, 0]
    keep, count = pm.axis_mask(valid, paddle.to_tensor(0.0), -(-canvas // 64))  # unknown
    assert count.numpy().tolist() == [-(-canvas // 64)] * 3 + [0]

