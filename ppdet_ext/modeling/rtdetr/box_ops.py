"""Box helpers shared by the RT-DETRv2 decoder, loss and post-process.

Boxes inside the model are normalized to the network input (values in [0, 1]) and kept
as ``cxcywh`` unless a function says otherwise.
"""
import paddle


def cxcywh_to_xyxy(boxes):
    """``[..., 4]`` cxcywh -> ``[..., 4]`` xyxy (same units)."""
    cx, cy, w, h = paddle.unbind(boxes, axis=-1)
    return paddle.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def inverse_sigmoid(x, eps=1e-5):
    """Logit of ``x`` clipped to ``[eps, 1 - eps]`` (finite for boxes on the border)."""
    x = x.clip(min=0.0, max=1.0)
    return paddle.log(x.clip(min=eps) / (1.0 - x).clip(min=eps))


def paired_iou(boxes_a, boxes_b, eps=1e-9):
    """IoU of row i of ``boxes_a`` with row i of ``boxes_b``; both ``[N, 4]`` xyxy.

    Returns:
        Tensor: ``[N]`` IoU values.
    """
    lt = paddle.maximum(boxes_a[:, :2], boxes_b[:, :2])
    rb = paddle.minimum(boxes_a[:, 2:], boxes_b[:, 2:])
    inter = (rb - lt).clip(min=0.0).prod(-1)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).clip(min=0.0).prod(-1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).clip(min=0.0).prod(-1)
    return inter / (area_a + area_b - inter + eps)


def paired_giou(boxes_a, boxes_b, eps=1e-9):
    """Generalized IoU of paired rows; both ``[N, 4]`` xyxy. Returns ``[N]``."""
    iou = paired_iou(boxes_a, boxes_b, eps)
    lt = paddle.maximum(boxes_a[:, :2], boxes_b[:, :2])
    rb = paddle.minimum(boxes_a[:, 2:], boxes_b[:, 2:])
    inter = (rb - lt).clip(min=0.0).prod(-1)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).clip(min=0.0).prod(-1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).clip(min=0.0).prod(-1)
    union = area_a + area_b - inter
    hull_lt = paddle.minimum(boxes_a[:, :2], boxes_b[:, :2])
    hull_rb = paddle.maximum(boxes_a[:, 2:], boxes_b[:, 2:])
    hull = (hull_rb - hull_lt).clip(min=0.0).prod(-1)
    return iou - (hull - union) / (hull + eps)
