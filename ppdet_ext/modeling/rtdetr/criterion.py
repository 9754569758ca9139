"""RT-DETR training loss: varifocal + L1 + GIoU on Hungarian-matched queries.

Terms are summed into three groups so the log keeps a fixed set of keys:
``loss_vfl/bbox/giou`` (last decoder layer), ``*_aux`` (every earlier layer and the
encoder proposals) and ``*_dn`` (every layer's denoising queries, zero if a batch had none).
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet.core.workspace import serializable

from ppdet_ext.registry import register
from .box_ops import cxcywh_to_xyxy, paired_giou, paired_iou
from .varifocal_loss import ExtVarifocalLoss

__all__ = ['ExtRTDETRLoss']

_TERMS = ('vfl', 'bbox', 'giou')


@register
@serializable
class ExtRTDETRLoss(nn.Layer):
    """Args:
        num_classes (int): classes.
        matcher (HungarianMatcher): ppdet's matcher (``use_focal_loss: true``,
            coefficients class 2, bbox 5, giou 2).
        loss_coeff (dict): weights of ``vfl``, ``bbox`` (L1) and ``giou``.
        vfl_alpha (float), vfl_gamma (float): varifocal parameters.
        aux_loss (bool): add the per-layer and encoder auxiliary terms.
    """
    __shared__ = ['num_classes']
    __inject__ = ['matcher']

    def __init__(self, num_classes=80, matcher='HungarianMatcher', loss_coeff=None,
                 vfl_alpha=0.75, vfl_gamma=2.0, aux_loss=True):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.loss_coeff = dict(loss_coeff or {'vfl': 1.0, 'bbox': 5.0, 'giou': 2.0})
        self.vfl = ExtVarifocalLoss(vfl_alpha, vfl_gamma)
        self.aux_loss = aux_loss

    def _match(self, boxes, logits, gt_bbox, gt_class):
        """Hungarian matching; images without boxes are matched separately to nothing."""
        empty = (np.zeros([0], 'int64'), np.zeros([0], 'int64'))
        keep = [i for i, g in enumerate(gt_class) if g.shape[0] > 0]
        result = [empty] * len(gt_class)
        if not keep:
            return result
        sel = paddle.to_tensor(np.array(keep, 'int64'))
        matched = self.matcher(paddle.gather(boxes.detach(), sel),
                               paddle.gather(logits.detach(), sel),
                               [gt_bbox[i] for i in keep], [gt_class[i] for i in keep])
        for i, (src, tgt) in zip(keep, matched):
            result[i] = (src.numpy().astype('int64'), tgt.numpy().astype('int64'))
        return result

    def _terms(self, boxes, logits, gt_bbox, gt_class, indices, num_gts):
        """VFL, L1 and GIoU for one set of predictions and its matching."""
        b, q = logits.shape[0], logits.shape[1]
        src = np.concatenate([i * q + s for i, (s, _) in enumerate(indices)]).astype('int64')
        zero = paddle.zeros([], dtype='float32')
        if src.size == 0:
            onehot = paddle.zeros_like(logits)
            vfl = self.vfl(logits, onehot, onehot) * q / num_gts
            return {'vfl': vfl, 'bbox': zero + boxes.sum() * 0.0, 'giou': zero + boxes.sum() * 0.0}
        src_t = paddle.to_tensor(src)
        tgt_boxes = paddle.concat([paddle.gather(gt_bbox[i], paddle.to_tensor(t))
                                   for i, (_, t) in enumerate(indices) if t.size > 0])
        tgt_labels = paddle.concat([paddle.gather(gt_class[i].reshape([-1]), paddle.to_tensor(t))
                                    for i, (_, t) in enumerate(indices) if t.size > 0])
        pred_boxes = paddle.gather(boxes.flatten(0, 1), src_t)
        pred_xyxy, tgt_xyxy = cxcywh_to_xyxy(pred_boxes), cxcywh_to_xyxy(tgt_boxes)

        iou = paired_iou(pred_xyxy, tgt_xyxy).detach()
        labels = paddle.full([b * q], self.num_classes, dtype='int64')
        labels = paddle.scatter(labels, src_t, tgt_labels.astype('int64'))
        onehot = F.one_hot(labels, self.num_classes + 1)[:, :-1].reshape([b, q, -1])
        score = paddle.scatter(paddle.zeros([b * q]), src_t, iou).reshape([b, q, 1])
        vfl = self.vfl(logits, onehot, onehot * score) * q / num_gts
        l1 = F.l1_loss(pred_boxes, tgt_boxes, reduction='sum') / num_gts
        giou = (1.0 - paired_giou(pred_xyxy, tgt_xyxy)).sum() / num_gts
        return {'vfl': vfl, 'bbox': l1, 'giou': giou}

    def _add(self, total, key, terms):
        for t in _TERMS:
            name = f'loss_{t}{key}'
            total[name] = total.get(name, 0.0) + self.loss_coeff[t] * terms[t]

    def forward(self, out, gt_bbox, gt_class):
        """Args:
            out (dict): the decoder's training output.
            gt_bbox (list[Tensor]): per image ``[n_i, 4]`` cxcywh normalized.
            gt_class (list[Tensor]): per image ``[n_i, 1]`` int.

        Returns:
            dict: ``loss_{vfl,bbox,giou}{,_aux,_dn}`` scalars (no total; the
            architecture adds ``loss``).
        """
        gt_bbox, gt_class = list(gt_bbox), list(gt_class)
        num_gts = float(max(sum(int(g.shape[0]) for g in gt_class), 1))
        losses = {}
        dec_boxes, dec_logits = out['dec_boxes'], out['dec_logits']
        last = len(dec_boxes) - 1
        for i, (bx, lg) in enumerate(zip(dec_boxes, dec_logits)):
            if i < last and not self.aux_loss:
                continue
            idx = self._match(bx, lg, gt_bbox, gt_class)
            self._add(losses, '' if i == last else '_aux',
                      self._terms(bx, lg, gt_bbox, gt_class, idx, num_gts))
        if self.aux_loss:
            idx = self._match(out['enc_boxes'], out['enc_logits'], gt_bbox, gt_class)
            self._add(losses, '_aux', self._terms(out['enc_boxes'], out['enc_logits'],
                                                  gt_bbox, gt_class, idx, num_gts))
        meta = out.get('dn_meta')
        if meta is not None:
            idx = list(zip(meta['positive_idx'], meta['gt_idx']))
            dn_gts = num_gts * meta['num_group']
            for bx, lg in zip(out['dn_boxes'], out['dn_logits']):
                self._add(losses, '_dn', self._terms(bx, lg, gt_bbox, gt_class, idx, dn_gts))
        else:
            zero = dec_boxes[-1].sum() * 0.0
            for t in _TERMS:
                losses[f'loss_{t}_dn'] = zero
        if not self.aux_loss:
            zero = dec_boxes[-1].sum() * 0.0
            for t in _TERMS:
                losses[f'loss_{t}_aux'] = zero
        return losses
