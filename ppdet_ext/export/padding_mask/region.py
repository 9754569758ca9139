"""Region arithmetic: where each image of a zero-padded batch lies, at any feature size.

An image's region is read off the input with graph ops only (the export keeps its single
input): its valid height is 1 + the index of its last row holding a non-zero value (a
normalized pixel is never exactly 0; the runner pads with 0.0), likewise the width. A
stride-``s`` feature map then has ``ceil(v / s)`` valid cells along that axis
(:func:`axis_mask`); :class:`PaddingExtent` builds and caches the masks of one batch. Why
and how far this holds: docs/padding_invariance.md.

Engine notes for every module of this package: masks are the ``cast`` of a boolean, never a
float multiply (oneDNN on Paddle 2.6 runs a multiply by a broadcast-multiply result slowly);
tensor-by-tensor ops whose right operand has a batch dim are written ``paddle.multiply`` /
``divide`` / ``subtract`` / ``add`` rather than ``* / - +`` (in a ``to_static`` trace Paddle
2.6's operator overloads call ``inspect.stack()`` for a warning when that dim is dynamic,
which makes exports slow; the graph ops are the same).
"""
import paddle

MAX_LOG2_STRIDE = 8          # strides 1 .. 256
PROBE_SIZE = 2 ** MAX_LOG2_STRIDE
_BIG = 1e4                   # "-inf" for max pools: PicoDet-S stem max-pool inputs reach ~600


def valid_extent(image):
    """Per-image valid height and width of a zero-padded batch.

    Args:
        image: ``[B, C, H, W]`` float; padding is exact 0.0 in every channel.

    Returns:
        (valid_h, valid_w): ``[B]`` float32 each (integer values); 1 + index of the last row
        (column) with any non-zero value, 0 for an all-zero image.
    """
    # max, not sum: paddle2onnx 1.3.1 converts reduce_sum only from opset 13
    mag = paddle.abs(image)
    rows = paddle.cast(mag.max(axis=[1, 3]) > 0, "float32")    # [B, H]
    cols = paddle.cast(mag.max(axis=[1, 2]) > 0, "float32")    # [B, W]
    shape = paddle.cast(paddle.shape(image), "float32")
    row_no = paddle.arange(1, shape[2] + 1, dtype="float32")   # 1..H
    col_no = paddle.arange(1, shape[3] + 1, dtype="float32")   # 1..W
    return paddle.multiply(rows, row_no).max(axis=1), paddle.multiply(cols, col_no).max(axis=1)


def _known_hw(x):
    """``(h, w)`` ints known now, -1 where dynamic. (A dy2static trace patches
    ``Variable.shape`` to hold tensors for dynamic dims; the desc keeps the -1.)"""
    shape = x.shape if paddle.in_dynamic_mode() else x.desc.shape()
    return tuple(int(d) for d in shape[2:])


def _stride_int(size_in, size_feat):
    """Power of two ``s`` with ``ceil(size_in / s) == size_feat`` (ints), or None."""
    for k in range(MAX_LOG2_STRIDE + 1):
        if -(-size_in // 2 ** k) == size_feat:
            return 2 ** k
    return None


def _stride_graph(size_in, size_feat):
    """Graph version of :func:`_stride_int` for float32 scalar tensors; 0 if none.

    ``ceil(H / s) == h`` iff ``(h - 1) * s < H <= h * s``: for ``H > s`` at most one ``s``
    matches; for ``h == 1`` every large ``s`` does, and any of them gives one valid cell.
    """
    pow2 = paddle.to_tensor([2.0 ** k for k in range(MAX_LOG2_STRIDE + 1)], dtype="float32")
    hit = paddle.logical_and((size_feat - 1) * pow2 < size_in, size_in <= size_feat * pow2)
    return (paddle.cast(hit, "float32") * pow2).max()


def axis_mask(valid, stride, size_feat):
    """Cells inside each image along one axis: ``i < ceil(v / s)`` (i.e. ``i * s < v``).

    Args:
        valid: ``[B]`` float32 valid input size along the axis (:func:`valid_extent`).
        stride: int (a power of two), or float32 scalar tensor (0: unknown, every cell kept).
        size_feat: float32 scalar tensor (or int), the feature map size along the axis.

    Returns:
        (keep ``[B, size_feat]`` bool, count ``[B]`` float32 number of True cells).
    """
    if isinstance(stride, paddle.Tensor):
        count = paddle.ceil(valid / paddle.maximum(stride, paddle.full_like(stride, 1e-6)))
        count = paddle.minimum(count, paddle.zeros_like(count) + size_feat)
    else:   # v <= H, so ceil(v / s) <= ceil(H / s) = size_feat; 1 / s exact (power of 2)
        count = paddle.ceil(valid * (1.0 / stride))
    idx = paddle.arange(0, size_feat, dtype="float32")
    return paddle.less_than(idx.unsqueeze(0), count.unsqueeze(1)), count


class PaddingExtent:
    """The image regions of one padded batch, and their masks at any feature size.

    Args:
        image: ``[B, 3, H, W]`` zero-padded input.
        strides: ``{(id(layer), "in" | "out", call): (s_h, s_w)}`` strides of layer inputs
            and outputs, per call of the layer (:func:`probe_strides`), used where shapes are
            not concrete (a trace).
        round_to: round each valid size up to a multiple of this (clipped to the canvas);
            see :func:`padding_invariant`.
    """

    def __init__(self, image, strides=None, round_to=1):
        self.image = image
        self._in_shape = paddle.cast(paddle.shape(image), "float32")
        self.valid_h, self.valid_w = valid_extent(image)
        if round_to > 1:
            self.valid_h = paddle.minimum(paddle.ceil(self.valid_h / round_to) * round_to,
                                          paddle.zeros_like(self.valid_h) + self._in_shape[2])
            self.valid_w = paddle.minimum(paddle.ceil(self.valid_w / round_to) * round_to,
                                          paddle.zeros_like(self.valid_w) + self._in_shape[3])
        self.round_to = round_to
        self.in_hw = _known_hw(image)
        self.strides = strides or {}
        self._cache = {}
        self._calls = {}
        self.hooked = 0

    def count_call(self, layer, inputs):
        """Forward pre-hook registered first on every hooked layer: counts its calls, so
        that the hooks of a layer called once per FPN level find each call's stride."""
        self._calls[id(layer)] = self._calls.get(id(layer), 0) + 1

    def where(self, layer, side):
        """Key of the current call's ``side`` (``"in"`` or ``"out"``) in ``strides``."""
        return (id(layer), side, self._calls.get(id(layer), 1) - 1)

    def stride(self, where, x):
        """``(s_h, s_w)`` ints of the feature map ``x`` (concrete shapes or the probe), or
        None where unknown."""
        return self._stride_key(where, x)

    def masks(self, where, x):
        """(mask ``[B, 1, h, w]``, share ``[B, 1, 1, 1]``) float32 for the feature map ``x``:
        1 inside the image region, and the region's share of the map, ``cells / (h * w)``
        (at least ``1 / (h * w)``).

        ``where``: :meth:`where`, the key of ``x``'s stride in ``strides``.
        Built once per stride (or per call where neither shape nor stride is known).
        """
        key = self._stride_key(where, x)
        if key is None:
            return self._build(x, None)
        if key not in self._cache:
            self._cache[key] = self._build(x, key)
        return self._cache[key]

    def _stride_key(self, where, x):
        hw = _known_hw(x)
        if min(self.in_hw + hw) > 0:                      # concrete shapes
            key = (_stride_int(self.in_hw[0], hw[0]), _stride_int(self.in_hw[1], hw[1]))
            return key if None not in key else None
        return self.strides.get(where)

    def _build(self, x, strides):
        shape = paddle.cast(paddle.shape(x), "float32")
        if strides is None:
            strides = (_stride_graph(self._in_shape[2], shape[2]),
                       _stride_graph(self._in_shape[3], shape[3]))
        keep, count_h, count_w = self._keep(strides, shape[2], shape[3])
        mask = paddle.cast(keep.unsqueeze(1), "float32")                  # [B, 1, h, w]
        cells = paddle.multiply(count_h, count_w)
        share = paddle.maximum(cells, paddle.ones_like(cells)) / (shape[2] * shape[3])
        return mask, share.reshape([-1, 1, 1, 1])

    def _keep(self, strides, h, w):
        """(``[B, h, w]`` bool region cells, ``[B]`` rows, ``[B]`` columns) of a map with
        ``strides`` (s_h, s_w) and size ``h`` x ``w``."""
        keep_h, count_h = axis_mask(self.valid_h, strides[0], h)     # [B, h], [B]
        keep_w, count_w = axis_mask(self.valid_w, strides[1], w)
        return paddle.logical_and(keep_h.unsqueeze(2), keep_w.unsqueeze(1)), count_h, count_w

    def level_mask(self, stride):
        """``[B, h*w, 1]`` float32, row-major over ``(y, x)``: 1 for the cells of a
        stride-``stride`` output level that lie in each image's region, 0 for the padding.

        A dense head's candidates at cells outside the region come from anchors that do
        not exist when the image runs alone (bs = 1: its canvas *is* its region), yet
        their boxes can reach into the image; a head multiplies its scores by this so
        every batch proposes the bs = 1 candidates.

        Args:
            stride: int, the level's stride (a power of two); the level is
                ``ceil(H / stride) x ceil(W / stride)`` of the canvas, what stride-2 k3/p1
                convs and pools produce.

        Reuses the hooked layers' mask of that stride when there is one (no new ops).
        """
        key = ("level", stride)
        if key not in self._cache:
            if (stride, stride) in self._cache:
                mask = self._cache[(stride, stride)][0]                   # [B, 1, h, w]
            else:
                h, w = (paddle.ceil(self._in_shape[i] / stride) for i in (2, 3))
                mask = paddle.cast(self._keep((stride, stride), h, w)[0], "float32")
            self._cache[key] = mask.flatten(1).unsqueeze(2)
        return self._cache[key]

    def low_fill(self, where, x):
        """``[B, 1, h, w]``: 0 inside the region, ``-BIG`` outside (max pools' "-inf")."""
        key = ("low",) + (self._stride_key(where, x) or (id(x),))
        if key not in self._cache:
            self._cache[key] = (self.masks(where, x)[0] - 1.0) * _BIG
        return self._cache[key]
