"""Make a conv net's outputs independent of the zero padding around each image (issue #4).

A keep-ratio export is fed batches zero-padded bottom/right to the batch maximum, so the
canvas an image sits in depends on the other images of its batch. Two things then reach the
image's outputs (measured on PicoDet-S, docs/batching.md "Correctness"):

* global statistics: ``AdaptiveAvgPool2D(1)`` (the squeeze-excitation blocks of ppdet's ESNet
  and LCNet) averages over the padding, which changes every score of the image;
* the border: a 3x3/5x5 conv or a max pool next to the image's bottom/right edge reads padded
  cells, which after the first conv + BN are no longer 0, and their values depend on how far
  the canvas goes. PicoDet's deep receptive field carries this a few hundred pixels in.

Inside :func:`padding_invariant` these layers see each image as if it were alone: global
average pools average over the image's region only, and (``borders=True``) the input of each
spatial conv is zeroed outside the region (what the conv's own zero padding reads at an image
edge), max pools read ``x - BIG`` there (their own padding is ``-inf``) and zero their padded
outputs. Pointwise layers (1x1 convs, BN, activations, nearest upsampling) need nothing: what
they compute in the padding stays there. With ``borders=True`` the outputs at an image's
cells are the same in any canvas, to float rounding (tests/test_padding_invariance.py).

The region is read off the input itself with graph ops only, so the export keeps its single
input (docs/export_format.md):

* the runner pads with exact ``0.0`` in every channel, whereas a normalized pixel
  ``(p / 255 - mean) / std`` (integer ``p``, ImageNet mean/std) is never 0; so the valid
  height of image ``b`` is 1 + the index of its last row holding any non-zero value, and
  likewise the width (:func:`valid_extent`). The rule reads one image only, so it answers
  the same in every batch (an image whose own last rows are exactly 0 is cut the same way
  every time).
* a stride-``s`` feature map of an image of valid size ``v`` has ``ceil(v / s)`` valid cells
  (a k3/p1, k5/p2 or k1/p0 conv with stride 2 maps ``n`` to ``ceil(n / 2)``): cell ``i`` is
  valid iff ``i * s < v``. ``s`` is the power of two with ``ceil(H / s) == h`` for the
  canvas ``H`` and the feature size ``h`` (exact also where ``H`` is not a multiple of ``s``,
  e.g. the stride-64 level of a 416-high canvas). Dygraph reads it off the concrete shapes;
  a ``to_static`` trace (dynamic shapes) gets each layer's stride from a probe traced at
  ``PROBE_SIZE`` into a scratch program (not exported), so the graph builds one mask per
  stride, not one per layer.

Index arithmetic is float32 (exact for canvas sizes below 2**24 / 2**MAX_LOG2_STRIDE). Masks are
produced by ``cast`` of a boolean, not by a float multiply: Paddle 2.6 oneDNN multiplies a
feature map by a mask that a oneDNN broadcast multiply produced 3-30x slower (measured).

Not handled, so still padding-dependent: functional global ops (``F.adaptive_avg_pool2d``
inside a ``forward``, e.g. ppdet ``PicoFeat(use_se=True)``), and the layer types in
``_UNHANDLED`` (a warning names them).
"""
import contextlib
import warnings

import paddle
from paddle import nn

__all__ = ["valid_extent", "axis_mask", "PaddingExtent", "padding_invariant",
           "MAX_LOG2_STRIDE", "PROBE_SIZE"]

MAX_LOG2_STRIDE = 8          # strides 1 .. 256
PROBE_SIZE = 2 ** MAX_LOG2_STRIDE
_BIG = 1e4                   # "-inf" for max pools: PicoDet-S stem max-pool inputs reach ~600
# statistics over space that a hook on the layer cannot restrict to the image
_UNHANDLED = (nn.GroupNorm, nn.InstanceNorm2D, nn.AvgPool2D, nn.AdaptiveMaxPool2D)


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
    return (rows * row_no).max(axis=1), (cols * col_no).max(axis=1)


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
    return idx.unsqueeze(0) < count.unsqueeze(1), count


class PaddingExtent:
    """The image regions of one padded batch, and their masks at any feature size.

    Args:
        image: ``[B, 3, H, W]`` zero-padded input.
        strides: ``{(id(layer), "in" | "out"): (s_h, s_w)}`` strides of layer inputs and
            outputs (:func:`probe_strides`), used where shapes are not concrete (a trace).
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
        self.in_hw = _known_hw(image)
        self.strides = strides or {}
        self._cache = {}

    def masks(self, where, x):
        """(mask ``[B, 1, h, w]``, share ``[B, 1, 1, 1]``) float32 for the feature map ``x``:
        1 inside the image region, and the region's share of the map, ``cells / (h * w)``
        (at least ``1 / (h * w)``).

        ``where``: ``(id(layer), "in" | "out")``, the key of ``x``'s stride in ``strides``.
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
        keep_h, count_h = axis_mask(self.valid_h, strides[0], shape[2])     # [B, h], [B]
        keep_w, count_w = axis_mask(self.valid_w, strides[1], shape[3])
        keep = paddle.logical_and(keep_h.unsqueeze(2), keep_w.unsqueeze(1))
        mask = paddle.cast(keep.unsqueeze(1), "float32")                  # [B, 1, h, w]
        cells = count_h * count_w
        share = paddle.maximum(cells, paddle.ones_like(cells)) / (shape[2] * shape[3])
        return mask, share.reshape([-1, 1, 1, 1])

    def low_fill(self, where, x):
        """``[B, 1, h, w]``: 0 inside the region, ``-BIG`` outside (max pools' "-inf")."""
        key = ("low",) + (self._stride_key(where, x) or (id(x),))
        if key not in self._cache:
            self._cache[key] = (self.masks(where, x)[0] - 1.0) * _BIG
        return self._cache[key]


def _is_spatial_conv(layer):
    return isinstance(layer, nn.Conv2D) and max(layer._kernel_size) > 1


def _is_global_avg_pool(layer):
    return (isinstance(layer, nn.AdaptiveAvgPool2D)
            and layer._output_size in (1, [1, 1], (1, 1)))


def _handled(layer, borders):
    if getattr(layer, "_data_format", "NCHW") != "NCHW":
        return False
    if _is_global_avg_pool(layer):
        return True
    return borders and (_is_spatial_conv(layer) or isinstance(layer, nn.MaxPool2D))


def _hooks_for(layer, extent):
    """``(pre_hook, post_hook or None)`` making ``layer`` read only the image region."""
    def zero_outside(lay, inputs):
        if inputs[0] is extent.image:       # already 0.0 outside (rounding only adds padding)
            return None
        mask, _ = extent.masks((id(lay), "in"), inputs[0])
        return (inputs[0] * mask,) + tuple(inputs[1:])

    if isinstance(layer, nn.MaxPool2D):
        def low_outside(lay, inputs):
            # x - BIG outside: below any activation, like the pool's own -inf padding
            return (inputs[0] + extent.low_fill((id(lay), "in"), inputs[0]),) + \
                tuple(inputs[1:])

        def zero_out(lay, inputs, out):
            return out * extent.masks((id(lay), "out"), out)[0]
        return low_outside, zero_out
    if _is_global_avg_pool(layer):
        def masked_mean(lay, inputs, out):
            # The pool read zeros outside: out = sum(region) / (h*w); divide by the share.
            # Divided, not multiplied by the inverse: Paddle 2.6 oneDNN multiplies a
            # [B, C, 1, 1] pool output by a [B, 1, 1, 1] tensor wrongly for B > 1 (measured;
            # division is right). The pool, not reduce_mean/reduce_sum: those run ~30x
            # slower under oneDNN here (measured), and paddle2onnx 1.3.1 converts reduce_sum
            # only from opset 13.
            return out / extent.masks((id(lay), "in"), inputs[0])[1]
        return zero_outside, masked_mean
    return zero_outside, None


def probe_strides(layers, probe, channels=3):
    """Strides of the inputs and outputs of ``layers``, from one run of ``probe`` on a
    ``PROBE_SIZE`` square.

    Meant for a ``to_static`` trace: the probe runs in a scratch ``Program`` (only static
    shape inference happens there), so the exported graph does not contain it.

    Returns:
        ``{(id(layer), "in" | "out"): (s_h, s_w)}`` where the probe's shapes were concrete.
    """
    seen, handles = {}, []

    def record_in(layer, inputs):
        seen[(id(layer), "in")] = _known_hw(inputs[0])

    def record_out(layer, inputs, out):
        seen[(id(layer), "out")] = _known_hw(out)

    for layer in layers:
        handles.append(layer.register_forward_pre_hook(record_in))
        handles.append(layer.register_forward_post_hook(record_out))
    try:
        with paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()):
            probe(paddle.zeros([1, channels, PROBE_SIZE, PROBE_SIZE], dtype="float32"))
    finally:
        for handle in handles:
            handle.remove()
    strides = {}
    for key, (h, w) in seen.items():
        s = (_stride_int(PROBE_SIZE, h), _stride_int(PROBE_SIZE, w)) if min(h, w) > 0 else ()
        if s and None not in s:
            strides[key] = s
    return strides


@paddle.jit.not_to_static      # plain Python even when called from traced code
@contextlib.contextmanager
def padding_invariant(model, image, *, borders=True, probe=None, round_to=1):
    """Within the block, ``model``'s spatial layers read only each image's own region.

    Forward pre/post hooks on the layer instances, removed on exit (the model and its classes
    are otherwise untouched). Works in dygraph and while ``paddle.jit.to_static`` traces (the
    hooks then become graph ops).

    Args:
        model: a ``paddle.nn.Layer`` (NCHW).
        image: ``[B, 3, H, W]`` the zero-padded input the model is about to see.
        borders: also mask spatial convs and max pools (exact invariance); False: only the
            global average pools.
        probe: ``fn(image)`` running the same layers as the block; in a trace it is run once
            on a ``PROBE_SIZE`` square to learn each layer's stride (fewer graph ops).
            Without it each layer searches its stride in the graph.
        round_to: treat each image's region as its valid size rounded up to a multiple of
            this. With the runner's ``pad_stride`` an image's region is exactly the canvas
            it gets alone (bs = 1), so the masked graph gives bs = 1 the same outputs as the
            plain one, and every batch the bs = 1 outputs. 1: the image's exact size.

    Yields:
        int: the number of layers hooked.
    """
    layers = [m for m in model.sublayers(include_self=True) if _handled(m, borders)]
    unhandled = sorted({type(m).__name__ for m in model.sublayers(include_self=True)
                        if isinstance(m, _UNHANDLED + (nn.AdaptiveAvgPool2D,))
                        and not _handled(m, borders)})
    if unhandled:
        warnings.warn(f"padding_invariant: {unhandled} still see the padding", stacklevel=3)
    strides = None
    if probe is not None and not paddle.in_dynamic_mode():
        strides = probe_strides(layers, probe, channels=image.shape[1])
    extent = PaddingExtent(image, strides, round_to)
    handles = []
    for layer in layers:
        pre, post = _hooks_for(layer, extent)
        handles.append(layer.register_forward_pre_hook(pre))
        if post is not None:
            handles.append(layer.register_forward_post_hook(post))
    try:
        yield len(layers)
    finally:
        for handle in handles:
            handle.remove()
