"""Reading value maps at sampling locations: the three forms RT-DETRv2's deformable attention
uses (see :mod:`.deformable_attention` for when each is used).

* :func:`sample_bilinear`: bilinear ``grid_sample`` (zeros outside, ``align_corners=False``).
* :func:`sample_discrete`: one pixel per location, index ``floor(loc * size + 0.5)`` clipped
  per axis (x to ``[0, W-1]``, y to ``[0, H-1]``), read with a 1-D ``gather`` over a flattened
  ``B*heads*H*W`` axis (no GridSample / GatherND).
* :func:`attend_gather_free`: the same one-pixel read as one-hot rows built from
  ``Clip``/``Sub``/``Mul`` (:func:`onehot_index`) and two ``MatMul`` per level, for NPUs that
  run no data-dependent ``Gather`` (rknn-toolkit2 2.5.0; docs/onnx_rknn.md).

The index is the one rtdetrv2_pytorch and PaddleDetection's RT-DETRv2 compute
(``int(loc * size + 0.5)``; a float->int cast truncates, which equals ``floor`` wherever the
clip to ``>= 0`` does not apply): their discrete-sampling checkpoints are fine-tuned with it.
It is the integer nearest to ``loc * size``: the pixel whose top-left *corner* is nearest to
the location, half a pixel off ``grid_sample``'s centre convention (``align_corners=False``):
discrete sampling at ``k / size`` reads what bilinear sampling reads at the centre
``(k + 0.5) / size`` (``tests/test_rtdetr_sampling.py``). rtdetrv2_pytorch clips x
against ``H`` as well; on the square maps it is trained on that is the same, and clipping
each axis against its own size (as PaddleDetection does) is the only choice that stays
inside a rectangular map.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

__all__ = ['SAMPLING_METHODS', 'sample_bilinear', 'sample_discrete', 'onehot_index',
           'attend_gather_free']

SAMPLING_METHODS = ('default', 'discrete')

# The step function of :func:`onehot_index` is two clipped ramps of slope 2**12 each (2**24 in
# all, and no intermediate above 4096, so fp16 neither overflows nor turns 0 * inf into NaN).
# A value v >= 0.5 lies at least one ulp (2**-24 in fp32, 2**-11 in fp16) below an integer
# it has not reached, which the ramps map to exactly 0: the one-hot equals floor(v).
_STEP_SLOPE = 4096.0
# RKNN (rknn-toolkit2 2.5.0, rk3588) keeps a Transpose of [.., C, 1, S] on the NPU only when
# C is a multiple of 8, and a Reshape of a MatMul output [.., h, 1, w] only when w is (e.g. 100
# or 300 queries, a 20-wide map go to the CPU): the gather-free sampling pads both to it.
_ALIGN = 8


def sample_bilinear(value, h, w, loc):
    """Bilinear read of one level.

    Args:
        value (Tensor): ``[N, C, h*w]`` value map, ``N = B * heads``.
        h (int | Tensor), w (int | Tensor): map size.
        loc (Tensor): ``[N, Lq, P, 2]`` normalized (x, y) in ``[0, 1]``.

    Returns:
        Tensor: ``[N, C, Lq, P]``.
    """
    grid = 2.0 * loc - 1.0
    value = value.reshape([0, 0, h, w])
    return F.grid_sample(value, grid, mode='bilinear', padding_mode='zeros',
                         align_corners=False)


def _pixel_index(coord, size):
    """``clip(floor(coord * size + 0.5), 0, size - 1)`` (int64) along an axis of ``size``
    pixels, ``coord`` normalized (see the module docstring)."""
    if isinstance(size, int):
        return paddle.floor(coord * size + 0.5).astype('int64').clip(min=0, max=size - 1)
    size = size.astype('int64')
    idx = paddle.floor(coord * size.astype(coord.dtype) + 0.5).astype('int64')
    return paddle.minimum(idx.clip(min=0), size - 1)


def sample_discrete(value, h, w, loc):
    """One-pixel read of one level with plain 1-D integer indexing (same I/O as
    :func:`sample_bilinear`); index ``floor(loc * size + 0.5)``, x clipped against ``w`` and
    y against ``h``."""
    n, c = value.shape[0], value.shape[1]
    if n is None or n < 0:  # dynamic batch in a static graph
        n = paddle.shape(value)[0]
    lq, p = loc.shape[1], loc.shape[2]
    x = _pixel_index(loc[..., 0], w)
    y = _pixel_index(loc[..., 1], h)
    if not isinstance(w, int):  # dynamic-shape export: sizes are 0-D int tensors
        w = w.astype('int64')
    if not isinstance(h, int):
        h = h.astype('int64')
    base = (paddle.arange(n, dtype='int64') * (h * w)).reshape([-1, 1, 1])
    flat_idx = (base + y * w + x).flatten()                     # [N*Lq*P]
    table = value.transpose([0, 2, 1]).reshape([-1, c])         # [N*h*w, C]
    picked = paddle.gather(table, flat_idx, axis=0)             # [N*Lq*P, C]
    return picked.reshape([-1, lq, p, c]).transpose([0, 3, 1, 2])


def onehot_index(coord, size, bins=None):
    """One-hot row of :func:`sample_discrete`'s index ``clip(floor(coord * size + 0.5), 0,
    size - 1)``, built from float ops only.

    ``onehot[k] = step(v - k) - step(v - k - 1)`` with
    ``v = clip(coord * size + 0.5, 0, size - 1)`` (``floor`` commutes with a clip to integers)
    and ``step(t) = [t >= 0]`` written as ``clip(clip(t * 2**12, -1, 1) * 2**12 + 1, 0, 1)``.
    RKNN: no ``Floor`` and no float->int ``Cast`` (both run on the CPU there). Exact in fp32
    and fp16 (see ``_STEP_SLOPE``).

    Args:
        coord (Tensor): ``[..., 1]`` normalized coordinate (any value; clipped).
        size (int): pixels along the axis.
        bins (int): length of the row, ``>= size`` (default ``size``); bins past ``size - 1``
            are always 0.

    Returns:
        Tensor: ``[..., bins]`` of 0/1.
    """
    bins = size if bins is None else int(bins)
    v = (coord * float(size) + 0.5).clip(min=0.0, max=float(size - 1))
    grid = paddle.to_tensor(np.arange(bins + 1, dtype='float32'))     # constant, not a Range
    ramp = ((v - grid) * _STEP_SLOPE).clip(min=-1.0, max=1.0)          # [..., bins + 1]
    step = (ramp * _STEP_SLOPE + 1.0).clip(min=0.0, max=1.0)
    return step[..., :bins] - step[..., 1:]


def attend_gather_free(value, spatial_shapes, num_points, loc, weights):
    """One-pixel deformable read as dense one-hot ``MatMul``s (no Gather; see module doc).

    Per level, ``A[n, q, y, x] = sum_p w[n, q, p] * onehot_y[n, q, p, y] * onehot_x[n, q, p, x]``
    (a batched MatMul over the points), then ``value_l @ A^T``, summed over the levels. Equals
    :func:`sample_discrete` followed by the weighted sum over points, up to summation order.
    Costs ``N * Q * (P + C) * sum(h*w)`` multiply-adds instead of ``N * Q * P * C``.

    Args:
        value (Tensor): ``[N, C, sum(h*w)]``, ``N = B * heads``.
        spatial_shapes (list[tuple]): ``(h, w)`` per level, Python ints.
        num_points (list[int]): points per level.
        loc (Tensor): ``[N, Lq, sum(P), 2]`` normalized (x, y).
        weights (Tensor): ``[N, Lq, sum(P)]``.

    Returns:
        Tensor: ``[N, C, Lq]``.
    """
    n, lq = loc.shape[0], loc.shape[1]
    if n is None or n < 0 or lq is None or lq < 0 or not all(
            isinstance(v, int) for hw in spatial_shapes for v in hw):
        raise ValueError("gather-free sampling needs static shapes (a fixed-size export)")
    pad = -lq % _ALIGN
    if pad:  # zero weights: the padded queries read nothing and are cut off below
        loc = paddle.concat([loc, paddle.zeros([n, pad, loc.shape[2], 2], loc.dtype)], axis=1)
        weights = paddle.concat([weights, paddle.zeros([n, pad, weights.shape[2]],
                                                       weights.dtype)], axis=1)
    qp = lq + pad
    sections = [h * w for h, w in spatial_shapes]
    values = paddle.split(value, sections, axis=-1) if len(sections) > 1 else [value]
    out = None
    for v, (h, w), l, wt in zip(values, spatial_shapes, paddle.split(loc, num_points, axis=2),
                                paddle.split(weights, num_points, axis=2)):
        wb = w + (-w % _ALIGN)                                          # columns, RKNN-aligned
        if wb > w:  # zero columns: the extra one-hot bins are always 0 anyway
            c = v.shape[1]
            v = paddle.concat([v.reshape([n, c, h, w]), paddle.zeros([n, c, h, wb - w], v.dtype)],
                              axis=-1).reshape([n, c, h * wb])
        ox = onehot_index(l[..., 0:1], w, wb)                           # [N, Qp, P, wb]
        oy = onehot_index(l[..., 1:2], h) * wt.unsqueeze(-1)            # [N, Qp, P, h]
        a = paddle.matmul(oy, ox, transpose_x=True).reshape([n, qp, h * wb])
        # per level, not one MatMul over concatenated levels: RKNN re-tiles the concat of
        # [.., h, w] maps of different widths with a CPU Reshape
        part = paddle.matmul(v, a, transpose_y=True)                    # [N, C, Qp]
        out = part if out is None else out + part
    return out[:, :, :lq] if pad else out
