"""Export adapter for ppdet's ``GFL`` (ResNet + FPN + ``GFLHead``).

``gfl_raw_outputs(model, image)`` returns the dense, NMS-free outputs of
docs/export_format.md: ppdet's ``GFLHead`` in eval mode already applies the sigmoid and
decodes the DFL boxes per level as xyxy in input pixels; the adapter only concatenates the
levels (no NMS).

Padding (docs/padding_invariance.md): the head towers (``FCOSFeat``, ``ConvNormLayer(norm_type='gn')``) take
GroupNorm statistics over the whole map, and every 3x3 conv / the stem max pool near an
image's bottom/right edge reads the padding, so with dynamic H/W an image's outputs depended
on its batch. Like the PicoDet adapter (``adapter_picodet.py``), a dynamic-size trace and
dygraph run the network under ``padding_mask.padding_invariant`` (GroupNorm over the image's
region only, convs and pools reading its edge as an image edge), each image's region rounded
up to ``PAD_ROUND``, the runner's pad stride, so bs = 1 keeps the plain graph's outputs and
every batch gives the bs = 1 outputs. A fixed-size export keeps the plain graph.
"""
import functools

import paddle

from ppdet.modeling.architectures import GFL

from .adapters import _nms_cfg_from_head, register_adapter
from .padding_mask import PAD_ROUND, padding_context

__all__ = ["gfl_raw_outputs", "PAD_ROUND"]

def _forward(model, image):
    """Per-level ``(scores, boxes)`` lists of ppdet's GFL in eval mode (also the probe:
    it calls the hooked layers in the order the masked block does)."""
    return model.head(model.neck(model.backbone({"image": image})))


def gfl_raw_outputs(model, image, *, mask_padding=None):
    """Dense raw outputs of a ppdet ``GFL``.

    Args:
        model: ppdet ``GFL`` in eval mode.
        image: ``[B, 3, H, W]`` float32, preprocessed; padding (if any) is 0.0 bottom/right,
            H and W multiples of 32 for keep-ratio inputs.
        mask_padding: compute each image as if alone in its canvas
            (``padding_mask.padding_invariant``); None: ``padding_mask.masks_padding``
            (dygraph and dynamic-H/W traces mask, a fixed-size trace does not); masked,
            the cells outside each image's region score 0 (anchors bs = 1 does not
            have, whose boxes can still reach into the image). On an input
            whose images fill the canvas it changes outputs by float rounding only.

    Returns:
        scores: ``[B, N, C]`` sigmoid class probabilities, N = sum over levels of H_l*W_l.
        boxes: ``[B, N, 4]`` xyxy in network-input pixels.
    """
    with padding_context(model, image, mask_padding, probe=functools.partial(_forward, model)) as extent:
        cls_list, box_list = _forward(model, image)
        if extent is not None:      # cells in the padding propose nothing (bs = 1 has none)
            cls_list = [paddle.multiply(s, extent.level_mask(int(stride)))
                        for s, stride in zip(cls_list, model.head.fpn_stride)]
    return paddle.concat(cls_list, axis=1), paddle.concat(box_list, axis=1)


register_adapter(GFL, postprocess=lambda model: _nms_cfg_from_head(model.head))(
    gfl_raw_outputs)
