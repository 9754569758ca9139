"""Varifocal loss as RT-DETR uses it: IoU-weighted BCE targets for matched queries."""
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet.core.workspace import serializable

from ppdet_ext.registry import register

__all__ = ['ExtVarifocalLoss']


@register
@serializable
class ExtVarifocalLoss(nn.Layer):
    """``sum_q mean_c BCE(logit, t) * w`` with ``t = IoU * onehot`` and
    ``w = alpha * sigmoid(logit)^gamma * (1 - onehot) + t``.

    Args:
        alpha (float): weight of the negatives.
        gamma (float): focusing exponent on the negatives.
    """

    def __init__(self, alpha=0.75, gamma=2.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits, onehot, target_score):
        """Args:
            logits (Tensor): ``[B, Q, C]``.
            onehot (Tensor): ``[B, Q, C]`` float, 1 at the matched class.
            target_score (Tensor): ``[B, Q, C]`` float, IoU at the matched class.

        Returns:
            Tensor: scalar, summed over queries, averaged over classes (the caller
            normalizes by the number of boxes).
        """
        prob = F.sigmoid(logits).detach()
        weight = self.alpha * prob.pow(self.gamma) * (1.0 - onehot) + target_score
        loss = F.binary_cross_entropy_with_logits(
            logits, target_score, weight=weight, reduction='none')
        return loss.mean(-1).sum()
