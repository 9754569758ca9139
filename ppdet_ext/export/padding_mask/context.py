"""The context API: run a model so that each image of a padded batch is computed alone.

:func:`padding_invariant` installs the layer hooks (``layers.py``) for the block and removes
them after; :func:`padding_context` is what an export adapter enters (masked for dygraph and
dynamic-size traces, plain for a fixed-size trace). docs/padding_invariance.md explains the
design and lists what is not handled.
"""
import contextlib
import warnings

import paddle

from .layers import _handled, _hooks_for, _sees_padding
from .region import MAX_LOG2_STRIDE, PROBE_SIZE, PaddingExtent, _known_hw, _stride_int  # noqa: F401

# Export adapters round each image's region up to this, the pad_stride of the keep-ratio
# readers and of the deploy runner: an image alone (bs = 1) then fills its region, so bs = 1
# gives exactly the unmasked graph's outputs and every batch gives the bs = 1 outputs.
PAD_ROUND = 32


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
    turns ``if mask_padding is None: mask_padding = ...`` on an adapter's keyword-only
    argument into a truthy ``UndefinedVar``, which would mask a fixed-size trace too.
    """
    if mask_padding is None:
        mask_padding = masks_padding(image)
    if not mask_padding:
        return contextlib.nullcontext()
    return padding_invariant(model, image, probe=probe, round_to=round_to)
