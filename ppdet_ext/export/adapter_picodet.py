"""Export adapter for ppdet's ``PicoDet`` (ESNet/LCNet + CSP-PAN + ``PicoHead``).

``picodet_raw_outputs(model, image)`` returns the dense, NMS-free outputs of
docs/export_format.md. It is batch- and size-dynamic (ppdet's own
``PicoHead.forward_eval(export_post_process=False)`` hard-codes batch 1), and matches the
release-2.3 ONNX export level by level (``picodet_level_outputs``).

Decode, per FPN level with stride ``s`` and feature size ``H x W``:
    centre (cx, cy) = ((x + cell_offset) * s, (y + cell_offset) * s), x < W, y < H
    (l, t, r, b)    = head.distribution_project applied to the DFL logits
                      (softmax over reg_max + 1 bins, expectation with its ``project``)
    box             = (cx - l*s, cy - t*s, cx + r*s, cy + b*s), xyxy in input pixels.

Padding (docs/padding_invariance.md): with dynamic H/W the deploy runner zero-pads each batch to its largest
image, and PicoDet's squeeze-excitation pools and deep receptive field carry that padding
into every image's outputs. So a dynamic-size trace (and dygraph, which mirrors it) runs the
network under ``padding_mask.padding_invariant``: each image is computed as if it were alone,
whatever its batch (its region rounded up to ``PAD_ROUND``, the runner's pad stride). A
fixed-size export (no padding to speak of) keeps the plain graph.
"""
import functools
import warnings

import paddle
import paddle.nn.functional as F

from ppdet.modeling.architectures import PicoDet

from .adapters import _nms_cfg_from_head, register_adapter
from .padding_mask import PAD_ROUND, masks_padding, padding_context  # noqa: F401  (re-exported)

__all__ = ["picodet_level_outputs", "picodet_raw_outputs", "masks_padding", "PAD_ROUND"]

def picodet_level_outputs(model, image, *, mask_padding=None):
    """Per-level raw head outputs, in the release-2.3 ONNX output order.

    Args:
        model: a ppdet ``PicoDet`` (eval mode) whose head is a ``PicoHead``.
        image: ``[B, 3, H, W]`` float32, preprocessed; padding (if any) is 0.0 bottom/right.
        mask_padding: compute each image as if alone in its canvas
            (``padding_mask.padding_invariant``), and score 0 at the cells outside its
            region (the anchors bs = 1 does not have); None: :func:`masks_padding`. On an
            unpadded input it changes outputs by float rounding only.

    Returns:
        (scores, dfl_logits, feats): lists over FPN levels of ``[B, H_l*W_l, C]`` sigmoid
        probabilities, ``[B, H_l*W_l, 4*(reg_max+1)]`` DFL logits (sides l, t, r, b, each
        ``reg_max+1`` bins), row-major over ``(y, x)``, and the neck features
        ``[B, C_l, H_l, W_l]``.
    """
    head = model.head
    if getattr(head, "dgqp_module", None) is not None:
        raise NotImplementedError("PicoHead with a DGQP module is not supported")
    if getattr(head.conv_feat, "use_se", False):
        warnings.warn("PicoFeat(use_se=True) pools with F.adaptive_avg_pool2d: its outputs "
                      "depend on the padding", stacklevel=2)
    with padding_context(model, image, mask_padding, probe=functools.partial(_forward, model)) as extent:
        scores, logits, feats = _forward(model, image)
        if extent is not None:      # cells in the padding propose nothing (bs = 1 has none)
            scores = [paddle.multiply(s, extent.level_mask(int(stride)))
                      for s, stride in zip(scores, head.fpn_stride)]
    return scores, logits, feats


def _forward(model, image):
    head = model.head
    feats = model.neck(model.backbone({"image": image}))
    bins = 4 * (head.reg_max + 1)
    scores, logits = [], []
    for i, feat in enumerate(feats):
        cls_feat, reg_feat = head.conv_feat(feat, i)
        if head.conv_feat.share_cls_reg:
            out = head.head_cls_list[i](cls_feat)
            cls, reg = paddle.split(out, [head.cls_out_channels, bins], axis=1)
        else:
            cls = head.head_cls_list[i](cls_feat)
            reg = head.head_reg_list[i](reg_feat)
        scores.append(F.sigmoid(cls).flatten(2).transpose([0, 2, 1]))
        logits.append(reg.flatten(2).transpose([0, 2, 1]))
    return scores, logits, feats


def _level_centers(feat, stride, cell_offset):
    """``[H*W, 2]`` cell centres (x, y) in input pixels for a ``[B, C, H, W]`` feature."""
    shape = paddle.shape(feat)
    h, w = shape[2], shape[3]
    xs = (paddle.arange(w, dtype="float32") + cell_offset) * stride
    ys = (paddle.arange(h, dtype="float32") + cell_offset) * stride
    yy, xx = paddle.meshgrid(ys, xs)
    return paddle.stack([xx.flatten(), yy.flatten()], axis=-1)


def picodet_raw_outputs(model, image, *, mask_padding=None):
    """Dense raw outputs of a ppdet ``PicoDet``.

    Args:
        model: ppdet ``PicoDet`` in eval mode.
        image: ``[B, 3, H, W]`` float32, preprocessed, H and W multiples of 32 (the
            deepest backbone stride) for keep-ratio inputs.
        mask_padding: see :func:`picodet_level_outputs`.

    Returns:
        scores: ``[B, N, C]`` sigmoid class probabilities, N = sum over levels of H_l*W_l.
        boxes: ``[B, N, 4]`` xyxy in network-input pixels.
    """
    head = model.head
    scores, logits, feats = picodet_level_outputs(model, image, mask_padding=mask_padding)
    project = head.distribution_project.project        # [reg_max + 1]: 0, 1, ..., reg_max
    boxes = []
    for feat, logit, stride in zip(feats, logits, head.fpn_stride):
        prob = F.softmax(logit.reshape([0, -1, 4, head.reg_max + 1]), axis=-1)
        dist = paddle.matmul(prob, project) * float(stride)          # [B, HW, 4] ltrb px
        centers = _level_centers(feat, float(stride), float(head.cell_offset))
        lt, rb = paddle.split(dist, 2, axis=-1)
        boxes.append(paddle.concat([centers - lt, centers + rb], axis=-1))
    return paddle.concat(scores, axis=1), paddle.concat(boxes, axis=1)


register_adapter(PicoDet, postprocess=lambda model: _nms_cfg_from_head(model.head))(
    picodet_raw_outputs)
