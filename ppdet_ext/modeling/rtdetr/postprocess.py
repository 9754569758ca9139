"""Top-k post-process over all queries x classes (no NMS), boxes to original pixels."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet.core.workspace import serializable

from ppdet_ext.registry import register
from .box_ops import cxcywh_to_xyxy
from .decoder import gather_rows

__all__ = ['ExtRTDETRPostProcess', 'topk_detections']


def topk_detections(scores, boxes, k):
    """Best ``k`` (query, class) pairs per image.

    Args:
        scores (Tensor): ``[B, Q, C]`` probabilities.
        boxes (Tensor): ``[B, Q, 4]`` (any box format; rows are gathered).
        k (int): detections kept per image (``<= Q * C``).

    Returns:
        tuple: scores ``[B, k]``, labels ``[B, k]`` int64, boxes ``[B, k, 4]``.
    """
    num_classes = scores.shape[-1]
    top_scores, index = paddle.topk(scores.flatten(1), k, axis=-1)
    labels = index % num_classes
    query = index // num_classes
    return top_scores, labels, gather_rows(boxes, query)


@register
@serializable
class ExtRTDETRPostProcess(nn.Layer):
    """Args:
        num_classes (int): classes.
        num_top_queries (int): detections per image.
    """
    __shared__ = ['num_classes']

    def __init__(self, num_classes=80, num_top_queries=300):
        super().__init__()
        self.num_classes = num_classes
        self.num_top_queries = num_top_queries

    def forward(self, boxes, logits, im_shape, scale_factor):
        """Args:
            boxes (Tensor): ``[B, Q, 4]`` cxcywh normalized to the network input.
            logits (Tensor): ``[B, Q, C]``.
            im_shape (Tensor): ``[B, 2]`` network input ``(h, w)``.
            scale_factor (Tensor): ``[B, 2]`` resize factors ``(sy, sx)``.

        Returns:
            tuple: ``bbox`` ``[B*K, 6]`` rows ``(class, score, x1, y1, x2, y2)`` in
            original-image pixels, ``bbox_num`` ``[B]`` int32.
        """
        orig_hw = im_shape / scale_factor
        whwh = paddle.concat([orig_hw[:, 1:2], orig_hw[:, 0:1]] * 2, axis=-1).unsqueeze(1)
        xyxy = cxcywh_to_xyxy(boxes) * whwh
        k = min(self.num_top_queries, logits.shape[1] * logits.shape[2])
        scores, labels, xyxy = topk_detections(F.sigmoid(logits), xyxy, k)
        bbox = paddle.concat([labels.astype('float32').unsqueeze(-1), scores.unsqueeze(-1), xyxy],
                             axis=-1).flatten(0, 1)
        bbox_num = paddle.full([logits.shape[0]], k, dtype='int32')
        return bbox, bbox_num
