"""Spatial sizes as Python ints where the graph knows them, tensors only where it cannot.

Paddle 2.6.2's ``paddle.shape`` returns 0-D tensors that break ``concat`` and int asserts
in static mode (docs/stack.md), so every module asks here: dygraph and fixed-shape
export get Python ints (and constant-folded anchors / embeddings); a dynamic-shape export
(dims of ``-1``) gets 0-D int tensors for exactly the dims that are unknown.
"""
import paddle


def spatial_hw(x):
    """``(h, w)`` of an NCHW tensor: ints when static, 0-D int32 tensors otherwise."""
    h, w = x.shape[2], x.shape[3]
    if h is None or h < 0 or w is None or w < 0:
        dyn = paddle.shape(x)
        h = dyn[2] if (h is None or h < 0) else h
        w = dyn[3] if (w is None or w < 0) else w
    return h, w

