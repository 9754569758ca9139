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
average pools average over the image's region only, ``GroupNorm`` takes its mean and
variance per (image, group) over the region's cells only (GFL's head towers), and
(``borders=True``) the input of each spatial conv is zeroed outside the region (what the
conv's own zero padding reads at an image edge), max pools read ``x - BIG`` there (their own
padding is ``-inf``) and zero their padded outputs, and average pools (ResNet-vd shortcuts)
average over region cells only (a no-op where their windows cannot straddle the region
edge). Pointwise layers (1x1 convs, BN, activations, nearest upsampling) need nothing: what
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
  stride, not one per layer. A layer called more than once (GFL's head convs and norms are
  shared by the FPN levels) gets one stride per call, in call order.

Index arithmetic is float32 (exact for canvas sizes below 2**24 / 2**MAX_LOG2_STRIDE). Masks are
produced by ``cast`` of a boolean, not by a float multiply: Paddle 2.6 oneDNN multiplies a
feature map by a mask that a oneDNN broadcast multiply produced 3-30x slower (measured).
Tensor-by-tensor arithmetic whose right operand has a batch dim is written ``paddle.multiply``
/ ``divide`` / ``subtract`` / ``add``, not ``*`` / ``/`` / ``-`` / ``+``: in a static trace
Paddle 2.6's operator overloads call ``inspect.stack()`` for a deprecation warning whenever
the right operand's first dim is dynamic, ~0.08 s each under ppdet's deep call stacks (tiny
GFL export: 11 s -> 4.5 s, measured); the ops in the graph are the same.

Not handled, so still padding-dependent: functional global ops (``F.adaptive_avg_pool2d``
inside a ``forward``, e.g. ppdet ``PicoFeat(use_se=True)``), the layer types in
``_UNHANDLED``, NHWC layers and ``AvgPool2D(exclusive=False)`` / ``divisor_override`` (a
warning names them).
"""
import contextlib
import warnings

import paddle
import paddle.nn.functional as F
from paddle import nn

__all__ = ["valid_extent", "axis_mask", "PaddingExtent", "padding_invariant",
           "masks_padding", "padding_context", "MAX_LOG2_STRIDE", "PROBE_SIZE", "PAD_ROUND"]

MAX_LOG2_STRIDE = 8          # strides 1 .. 256
# Export adapters round each image's region up to this: the pad_stride of the keep-ratio
# readers (PadBatch pad_to_stride, infer_cfg.yml pad_stride) and of the deploy runner. An
# image alone (bs = 1) then fills its region, so bs = 1 gives exactly the unmasked graph's
# outputs and every batch gives the bs = 1 outputs. (With exact sizes, round 1, PicoDet-S
# coco_val158 AP fell 0.3417 -> 0.3384 at every batch size: docs/batching.md "Correctness".)
PAD_ROUND = 32
PROBE_SIZE = 2 ** MAX_LOG2_STRIDE
_BIG = 1e4                   # "-inf" for max pools: PicoDet-S stem max-pool inputs reach ~600
# statistics over space that a hook on the layer cannot restrict to the image (warned)
_UNHANDLED = (nn.InstanceNorm2D, nn.AdaptiveMaxPool2D)
# ... and these where _handled() says no (NHWC; a non-exclusive average pool; an adaptive
# average pool to more than 1x1)
_MAYBE = (nn.GroupNorm, nn.AvgPool2D, nn.AdaptiveAvgPool2D)


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


def _is_spatial_conv(layer):
    if isinstance(layer, nn.Conv2D):
        return max(layer._kernel_size) > 1
    # QAT swaps each conv for a QuantizedConv2D (not an nn.Conv2D; kernel only in its
    # weight). Its input fake-quant maps the masked zeros to exact zeros, so the same
    # input mask applies.
    return isinstance(layer, _quantized_conv_types()) and max(layer.weight.shape[2:]) > 1


def _quantized_conv_types():
    try:
        from paddle.nn.quant import quant_layers
    except ImportError:         # pragma: no cover  (builds without paddle.nn.quant)
        return ()
    cls = getattr(quant_layers, "QuantizedConv2D", None)
    return (cls,) if cls is not None else ()


def _is_global_avg_pool(layer):
    return (isinstance(layer, nn.AdaptiveAvgPool2D)
            and layer._output_size in (1, [1, 1], (1, 1)))


def _is_exclusive_avg_pool(layer):
    """An ``AvgPool2D`` dividing each window by its in-bounds cells (the default): on a
    zero-masked input, divided again by the window's region share, it averages the region
    cells only, which is what the image alone gives (its canvas edge is the region edge)."""
    return isinstance(layer, nn.AvgPool2D) and layer.exclusive and layer.divisor is None


def _nchw(layer):
    return getattr(layer, "_data_format", getattr(layer, "data_format", "NCHW")) == "NCHW"


def _handled(layer, borders):
    if not _nchw(layer):
        return False
    if _is_global_avg_pool(layer) or isinstance(layer, nn.GroupNorm):
        return True     # global statistics: restricted with or without borders
    return borders and (_is_spatial_conv(layer) or isinstance(layer, nn.MaxPool2D)
                        or _is_exclusive_avg_pool(layer))


def _sees_padding(layer, borders):
    """A layer whose statistics should be restricted to the region but are not (warned)."""
    if _handled(layer, borders):
        return False
    if isinstance(layer, nn.AvgPool2D):
        return borders          # a border effect, left alone on purpose without borders
    return isinstance(layer, _UNHANDLED + _MAYBE)


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def _windows_tile_region(pool, stride_in, round_to):
    """True if no window of the ``AvgPool2D`` ``pool`` straddles a region edge, so that the
    pool needs no mask (ResNet-vd's shortcut ``AvgPool2D(2, 2, ceil_mode=True)``).

    The region at the pool's input (stride ``s``) is ``ceil(V / s)`` cells, ``V`` a multiple
    of ``round_to`` (or the whole canvas, where there is no padding to read). Windows with
    stride == kernel ``k`` and no padding start at multiples of ``k``; if ``s * k`` divides
    ``round_to``, ``V / s`` is a multiple of ``k`` and each window lies wholly inside or
    wholly outside the region. With the pad stride 32 this holds for ``k = 2`` at input
    strides <= 16: every vd shortcut of ResNet (inputs at strides 4, 8, 16). Otherwise
    (or stride unknown in a trace without probe) the pool is masked.
    """
    if stride_in is None:
        return False
    kernel = _pair(pool.ksize)
    if _pair(pool.stride if pool.stride is not None else pool.ksize) != kernel:
        return False
    if not (pool.padding == "VALID" or all(p == 0 for p in _pair(pool.padding))):
        return False
    return all(round_to % (s * k) == 0 for s, k in zip(stride_in, kernel))


def _hooks_for(layer, extent):
    """``(pre_hook or None, post_hook or None)`` making ``layer`` read only the image region.

    Every hook names the current call's stride key with ``extent.where`` (a layer may be
    called once per FPN level)."""
    def zero_outside(lay, inputs):
        if inputs[0] is extent.image:       # already 0.0 outside (rounding only adds padding)
            return None
        mask, _ = extent.masks(extent.where(lay, "in"), inputs[0])
        return (paddle.multiply(inputs[0], mask),) + tuple(inputs[1:])

    if isinstance(layer, nn.MaxPool2D):
        def low_outside(lay, inputs):
            # x - BIG outside: below any activation, like the pool's own -inf padding
            low = extent.low_fill(extent.where(lay, "in"), inputs[0])
            return (paddle.add(inputs[0], low),) + tuple(inputs[1:])

        def zero_out(lay, inputs, out):
            return paddle.multiply(out, extent.masks(extent.where(lay, "out"), out)[0])
        return low_outside, zero_out
    if _is_global_avg_pool(layer):
        def masked_mean(lay, inputs, out):
            # The pool read zeros outside: out = sum(region) / (h*w); divide by the share.
            # Divided, not multiplied by the inverse: Paddle 2.6 oneDNN multiplies a
            # [B, C, 1, 1] pool output by a [B, 1, 1, 1] tensor wrongly for B > 1 (measured;
            # division is right). The pool, not reduce_mean/reduce_sum: those run ~30x
            # slower under oneDNN here (measured), and paddle2onnx 1.3.1 converts reduce_sum
            # only from opset 13.
            return paddle.divide(out, extent.masks(extent.where(lay, "in"), inputs[0])[1])
        return zero_outside, masked_mean
    if isinstance(layer, nn.GroupNorm):
        return None, _masked_group_norm(extent)
    if isinstance(layer, nn.AvgPool2D):
        def tiles(lay, x):
            return _windows_tile_region(lay, extent.stride(extent.where(lay, "in"), x),
                                        extent.round_to)

        def avg_in(lay, inputs):
            return None if tiles(lay, inputs[0]) else zero_outside(lay, inputs)

        def avg_region(lay, inputs, out):
            if tiles(lay, inputs[0]):
                return None
            # out = sum(region cells) / in-bounds cells of the window; the same pool of the
            # mask is region cells / in-bounds cells: the ratio averages the region cells.
            # Windows without region cells: 0 / clip(0) = 0.
            mask = extent.masks(extent.where(lay, "in"), inputs[0])[0]
            share = F.avg_pool2d(mask, lay.ksize, lay.stride, lay.padding,
                                 ceil_mode=lay.ceil_mode, exclusive=True)
            return paddle.divide(out, paddle.clip(share, min=1e-6))
        return avg_in, avg_region
    return zero_outside, None


def _masked_group_norm(extent):
    """Post-hook replacing a ``GroupNorm`` (NCHW) output by the group norm whose mean and
    variance per (image, group) are taken over the image's region cells only.

    The layer's own output (whole-canvas statistics) is dropped; in an export the pruning of
    ``jit.save`` removes the unused ``group_norm`` op. Engine-specific choices:

    * a group's channels are contiguous, so ``reshape [B, C, h, w] -> [B, G, C/G * h, w]``
      makes each (image, group) one map, and its statistics a global average pool of that
      map (``pool2d``, not ``reduce_mean``: ~30x faster under oneDNN here, and converted by
      paddle2onnx at any opset) divided by the region's share of the map (the share of
      ``[h, w]`` is that of ``[C/G * h, w]``: the region repeats in every channel);
    * two passes (mean, then the mean of the masked squared deviations), not
      ``E[x^2] - mean^2``: no cancellation where a group's mean is large against its spread;
    * every ``[B, G, 1, 1]`` statistic meets the ``[B, 1, 1, 1]`` share by division and the
      feature map by subtraction / division: the oneDNN broadcast multiply of a
      ``[B, C, 1, 1]`` by a ``[B, 1, 1, 1]`` tensor is wrong for B > 1 on Paddle 2.6;
    * the mask is the per-stride ``cast`` of a boolean shared with the convs.

    Cells outside the region get finite values (the region's statistics applied to them);
    the next spatial layer masks them.
    """
    def masked_group_norm(lay, inputs, out):
        x = inputs[0]
        mask, share = extent.masks(extent.where(lay, "in"), x)
        grouped, flat = [0, lay._num_groups, -1, 0], [0, lay._num_channels, -1, 0]
        total = F.adaptive_avg_pool2d(paddle.multiply(x, mask).reshape(grouped), 1)
        mean = paddle.divide(total, share)                              # [B, G, 1, 1]
        centred = paddle.subtract(x.reshape(grouped), mean)
        dev = paddle.multiply(centred.reshape(flat), mask)
        var = paddle.divide(F.adaptive_avg_pool2d(paddle.multiply(dev, dev).reshape(grouped), 1),
                            share)
        normed = paddle.divide(centred, paddle.sqrt(var + lay._epsilon)).reshape(flat)
        key = ("gn_affine", id(lay))
        if key not in extent._cache:            # once per layer, not once per FPN level
            extent._cache[key] = (lay.weight.reshape([1, -1, 1, 1]),
                                  lay.bias.reshape([1, -1, 1, 1]))
        scale, shift = extent._cache[key]
        return paddle.add(paddle.multiply(normed, scale), shift)
    return masked_group_norm


def probe_strides(layers, probe, channels=3):
    """Strides of the inputs and outputs of ``layers``, per call, from one run of ``probe``
    on a ``PROBE_SIZE`` square.

    Meant for a ``to_static`` trace: the probe runs in a scratch ``Program`` (only static
    shape inference happens there), so the exported graph does not contain it. It must call
    the layers in the order the traced block does (the same function, usually).

    Returns:
        ``{(id(layer), "in" | "out", call): (s_h, s_w)}`` where the probe's shapes were
        concrete; ``call`` counts the layer's calls from 0.
    """
    seen, calls, handles = {}, {}, []

    def record_in(layer, inputs):
        calls[id(layer)] = calls.get(id(layer), -1) + 1
        seen[(id(layer), "in", calls[id(layer)])] = _known_hw(inputs[0])

    def record_out(layer, inputs, out):
        seen[(id(layer), "out", calls[id(layer)])] = _known_hw(out)

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
        borders: also mask spatial convs, max and average pools (exact invariance); False:
            only the global statistics (global average pools, GroupNorm).
        probe: ``fn(image)`` running the same layers as the block; in a trace it is run once
            on a ``PROBE_SIZE`` square to learn each layer's stride (fewer graph ops).
            Without it each layer searches its stride in the graph.
        round_to: treat each image's region as its valid size rounded up to a multiple of
            this. With the runner's ``pad_stride`` an image's region is exactly the canvas
            it gets alone (bs = 1), so the masked graph gives bs = 1 the same outputs as the
            plain one, and every batch the bs = 1 outputs. 1: the image's exact size.

    Yields:
        PaddingExtent: the batch's regions (``hooked``: the number of layers hooked;
        ``level_mask`` for a dense head's output cells).
    """
    layers = [m for m in model.sublayers(include_self=True) if _handled(m, borders)]
    unhandled = sorted({type(m).__name__ for m in model.sublayers(include_self=True)
                        if _sees_padding(m, borders)})
    if unhandled:
        warnings.warn(f"padding_invariant: {unhandled} still see the padding", stacklevel=3)
    strides = None
    if probe is not None and not paddle.in_dynamic_mode():
        strides = probe_strides(layers, probe, channels=image.shape[1])
    extent = PaddingExtent(image, strides, round_to)
    extent.hooked = len(layers)
    handles = []
    for layer in layers:
        pre, post = _hooks_for(layer, extent)
        handles.append(layer.register_forward_pre_hook(extent.count_call))   # first
        if pre is not None:
            handles.append(layer.register_forward_pre_hook(pre))
        if post is not None:
            handles.append(layer.register_forward_post_hook(post))
    try:
        yield extent
    finally:
        for handle in handles:
            handle.remove()


def masks_padding(image):
    """Whether an export adapter should mask: True in dygraph and for a trace with a dynamic
    H or W; False for a trace of fixed spatial size (that graph stays plain)."""
    if paddle.in_dynamic_mode():
        return True
    return any(int(d) < 0 for d in image.shape[2:])


@paddle.jit.not_to_static
def padding_context(model, image, mask_padding=None, *, probe=None, round_to=PAD_ROUND):
    """The context an export adapter runs its network in: :func:`padding_invariant` or a
    null context.

    Args:
        mask_padding: True / False, or None for :func:`masks_padding`.
        probe, round_to: as :func:`padding_invariant`.

    The decision is made here, in plain Python even inside a trace: dy2static (Paddle 2.6)
    rewrites ``if mask_padding is None: mask_padding = ...`` on an adapter's keyword-only
    argument into an ``UndefinedVar``, which is truthy, so a fixed-size trace was masked
    too (measured: 948 ops and the mask's ``abs`` in a fixed ``[1, 3, 320, 320]`` PicoDet
    trace; tests/test_padding_invariance.py checks both adapters).
    """
    if mask_padding is None:
        mask_padding = masks_padding(image)
    if not mask_padding:
        return contextlib.nullcontext()
    return padding_invariant(model, image, probe=probe, round_to=round_to)
