"""Layer hooks: what each kind of layer does so that it reads only its image's region.

A spatial conv's input is zeroed outside the region (what its own zero padding reads at an
image edge); a max pool reads ``x - BIG`` there (its own padding is ``-inf``) and zeroes its
padded output; a global average pool is divided by the region's share of the map; a
GroupNorm takes its statistics over the region's cells; an exclusive average pool averages
region cells only (no-op where its windows tile the region). Pointwise layers need nothing.
The engine-specific choices (which op, and why) are listed in docs/padding_invariance.md.
"""
import paddle
import paddle.nn.functional as F
from paddle import nn

# statistics over space that a hook on the layer cannot restrict to the image (warned)
_UNHANDLED = (nn.InstanceNorm2D, nn.AdaptiveMaxPool2D)
# ... and these where _handled() says no (NHWC; a non-exclusive average pool; an adaptive
# average pool to more than 1x1)
_MAYBE = (nn.GroupNorm, nn.AvgPool2D, nn.AdaptiveAvgPool2D)


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
            # the pool read zeros outside: out = sum(region) / (h*w); divide by the share.
            # divide, not multiply by 1/share: oneDNN (Paddle 2.6) gets [B,C,1,1] * [B,1,1,1]
            # wrong for B > 1; the pool, not reduce_mean: far faster under oneDNN
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

    A group's channels are contiguous, so ``reshape [B, C, h, w] -> [B, G, C/G * h, w]``
    makes each (image, group) one map: its mean is a global average pool of the masked map
    divided by the region's share (the share of ``[h, w]`` is that of ``[C/G * h, w]``), its
    variance a second pass over the masked deviations (no ``E[x^2] - mean^2`` cancellation).
    The layer's own ``group_norm`` output is dropped (``jit.save`` prunes the dead op).
    Cells outside the region get finite values; the next spatial layer masks them. The
    engine-specific op choices are in docs/padding_invariance.md.
    """
    def masked_group_norm(lay, inputs, out):
        # pool2d, not reduce_mean (oneDNN speed, paddle2onnx at any opset); [B,G,1,1] stats
        # meet the [B,1,1,1] share by division only (oneDNN broadcast multiply is wrong, B > 1)
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
