"""One RT-DETR decoder layer and the small MLP used by the heads."""
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet_ext.registry import register
from .attention import ExtMultiHeadAttention
from .csp_rep import get_activation
from .deformable_attention import ExtMSDeformableAttention

__all__ = ['ExtMLP', 'ExtRTDETRDecoderLayer']


@register
class ExtMLP(nn.Layer):
    """``num_layers`` Linear layers with ReLU between them."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.LayerList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@register
class ExtRTDETRDecoderLayer(nn.Layer):
    """Self-attention over queries, deformable cross-attention to the memory, FFN;
    post-norm, query position added to self-attention q/k and the cross-attention query.

    Args:
        d_model (int): query size.
        nhead (int): heads of both attentions.
        dim_feedforward (int): FFN hidden size.
        dropout (float): dropout.
        activation (str): FFN activation.
        num_levels (int): memory levels.
        num_points (int | list[int]): sampling points per level.
        sampling_method (str): ``default`` | ``discrete``.
        head_dim (int): channels per head of both attentions; default ``d_model // nhead``
            (set it to keep the trained head size when heads are pruned).
    """

    def __init__(self, d_model=256, nhead=8, dim_feedforward=1024, dropout=0.0,
                 activation='relu', num_levels=3, num_points=4, sampling_method='default',
                 head_dim=None):
        super().__init__()
        self.self_attn = ExtMultiHeadAttention(d_model, nhead, dropout=dropout, head_dim=head_dim)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = ExtMSDeformableAttention(
            d_model, nhead, num_levels, num_points, method=sampling_method, head_dim=head_dim)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = get_activation(activation)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, reference_points, memory, spatial_shapes, attn_mask=None,
                query_pos=None):
        """``tgt`` ``[B, Q, C]``, ``reference_points`` ``[B, Q, 1, 4]`` cxcywh,
        ``memory`` ``[B, Lv, C]``, ``attn_mask`` bool ``[Q, Q]`` (True = may attend)."""
        q = k = tgt if query_pos is None else tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt, attn_mask=attn_mask)))
        query = tgt if query_pos is None else tgt + query_pos
        tgt = self.norm2(tgt + self.dropout2(
            self.cross_attn(query, reference_points, memory, spatial_shapes)))
        ffn = self.linear2(self.dropout3(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(ffn))
