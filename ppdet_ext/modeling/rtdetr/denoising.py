"""Contrastive denoising (CDN) queries for training.

Each ground-truth box yields one positive and one negative noised query per group; the
groups fill ``num_denoising`` slots. Counts and indices are computed with Python/numpy
from the list lengths, so nothing here syncs on a tensor value.
"""
import numpy as np
import paddle

from .box_ops import cxcywh_to_xyxy, inverse_sigmoid

__all__ = ['build_denoising_group']


def _pad_rows(rows, length, fill, dtype):
    out = []
    for r in rows:
        n = r.shape[0]
        if n < length:
            pad_shape = [length - n] + list(r.shape[1:])
            r = paddle.concat([r.astype(dtype), paddle.full(pad_shape, fill, dtype=dtype)], 0)
        out.append(r.astype(dtype))
    return paddle.stack(out, 0)


def _attention_mask(num_dn, num_queries, group_size, num_group):
    """Bool ``[T, T]`` mask, ``T = num_dn + num_queries``; True = may attend."""
    total = num_dn + num_queries
    blocked = np.zeros([total, total], dtype=bool)
    blocked[num_dn:, :num_dn] = True                      # matching queries never see dn
    for g in range(num_group):
        s, e = g * group_size, (g + 1) * group_size
        blocked[s:e, :s] = True                           # groups never see each other
        blocked[s:e, e:num_dn] = True
    return paddle.to_tensor(~blocked)


def build_denoising_group(gt_class, gt_bbox, *, num_classes, num_queries, class_embed,
                          num_denoising=100, label_noise_ratio=0.5, box_noise_scale=1.0):
    """Noised queries for one batch.

    Args:
        gt_class (list[Tensor]): per image ``[n_i, 1]`` int labels.
        gt_bbox (list[Tensor]): per image ``[n_i, 4]`` cxcywh normalized.
        num_classes (int): classes; label ``num_classes`` is the padding label.
        num_queries (int): matching queries that follow the dn queries.
        class_embed (nn.Embedding): ``num_classes + 1`` rows.
        num_denoising (int): dn slots to fill (rounded to whole groups).
        label_noise_ratio (float): labels flipped with probability ``ratio / 2``.
        box_noise_scale (float): box jitter relative to half the box size.

    Returns:
        None when there is nothing to denoise, else a tuple
        ``(query [B, N, C], ref_unact [B, N, 4], attn_mask [N+Q, N+Q] bool, meta)``;
        ``meta`` holds ``num_group``, ``num_split`` ``[N, Q]`` and per image the positive
        dn indices and the matching gt indices (numpy int64).
    """
    num_gts = [int(c.shape[0]) for c in gt_class]
    max_gt = max(num_gts) if num_gts else 0
    if num_denoising <= 0 or max_gt == 0:
        return None
    num_group = max(num_denoising // max_gt, 1)
    group_size = 2 * max_gt
    num_dn = group_size * num_group
    bs = len(gt_class)

    labels = _pad_rows([c.reshape([-1]) for c in gt_class], max_gt, num_classes, 'int64')
    boxes = _pad_rows([b.reshape([-1, 4]) for b in gt_bbox], max_gt, 0.0, 'float32')
    valid = np.zeros([bs, max_gt], dtype='float32')
    for i, n in enumerate(num_gts):
        valid[i, :n] = 1.0
    labels = labels.tile([1, 2 * num_group])
    boxes = boxes.tile([1, 2 * num_group, 1])
    valid = paddle.to_tensor(np.tile(valid, [1, 2 * num_group]))
    negative = np.tile(np.repeat([0.0, 1.0], max_gt), num_group).astype('float32')
    negative = paddle.to_tensor(negative).reshape([1, -1, 1])

    if label_noise_ratio > 0:
        flip = (paddle.rand(labels.shape) < label_noise_ratio * 0.5).astype('float32') * valid
        new_labels = paddle.randint(0, num_classes, labels.shape, dtype='int64')
        labels = paddle.where(flip > 0, new_labels, labels)

    if box_noise_scale > 0:
        xyxy = cxcywh_to_xyxy(boxes)
        half_wh = (boxes[..., 2:] * 0.5).tile([1, 1, 2]) * box_noise_scale
        sign = paddle.randint(0, 2, boxes.shape).astype('float32') * 2.0 - 1.0
        part = paddle.rand(boxes.shape)
        part = (part + 1.0) * negative + part * (1.0 - negative)
        xyxy = (xyxy + part * sign * half_wh).clip(min=0.0, max=1.0)
        boxes = paddle.concat([(xyxy[..., :2] + xyxy[..., 2:]) * 0.5,
                               xyxy[..., 2:] - xyxy[..., :2]], axis=-1)
    ref_unact = inverse_sigmoid(boxes)
    query = class_embed(labels)

    pos_idx, gt_idx = [], []
    for n in num_gts:
        offsets = np.arange(num_group, dtype='int64') * group_size
        pos_idx.append((offsets[:, None] + np.arange(n, dtype='int64')[None, :]).reshape([-1]))
        gt_idx.append(np.tile(np.arange(n, dtype='int64'), num_group))
    meta = {'num_group': num_group, 'num_split': [num_dn, num_queries],
            'positive_idx': pos_idx, 'gt_idx': gt_idx}
    mask = _attention_mask(num_dn, num_queries, group_size, num_group)
    return query, ref_unact, mask, meta
