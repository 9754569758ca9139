"""Multi-head scaled dot-product attention whose width may differ from the token size.

Same parameters, names, layouts and default initialisation as paddle's
``nn.MultiHeadAttention`` (``q_proj``/``k_proj``/``v_proj``/``out_proj`` Linear layers,
weights ``[in, out]``), so existing checkpoints load unchanged; the only addition is
``head_dim``: the projections are ``embed_dim -> num_heads * head_dim`` and back, so heads
can be removed (structured pruning) while every kept head stays the size it was trained at.
Equality with ``nn.MultiHeadAttention`` is tested in ``tests/test_slim_detr.py``.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet_ext.registry import register

__all__ = ['ExtMultiHeadAttention', 'additive_mask', 'resolve_head_dim']

# added to the logits of masked pairs (the value paddle's own bool/int conversion uses)
_MASK_PENALTY = 1e9


def resolve_head_dim(embed_dim, num_heads, head_dim=None):
    """``head_dim`` if given, else ``embed_dim // num_heads`` (which must divide)."""
    if head_dim is not None:
        if head_dim <= 0:
            raise ValueError(f"head_dim must be positive, got {head_dim}")
        return int(head_dim)
    if num_heads <= 0 or embed_dim % num_heads:
        raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}; "
                         "pass head_dim explicitly")
    return embed_dim // num_heads


def additive_mask(attn_mask, dtype):
    """Turn ``attn_mask`` into an additive logit mask.

    bool / int masks: True (1) = may attend, False (0) = masked (``-1e9`` added);
    float masks are already additive and are only cast.
    """
    if attn_mask is None or attn_mask.dtype == dtype:
        return attn_mask
    if attn_mask.dtype == paddle.bool or 'int' in str(attn_mask.dtype):
        return (attn_mask.astype(dtype) - 1.0) * _MASK_PENALTY
    return attn_mask.astype(dtype)


@register
class ExtMultiHeadAttention(nn.Layer):
    """Multi-head attention with a free head size.

    Args:
        embed_dim (int): token size of query/key/value and of the output.
        num_heads (int): heads.
        dropout (float): dropout on the attention weights (training only).
        head_dim (int): size of one head; default ``embed_dim // num_heads``.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, head_dim=None):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = resolve_head_dim(embed_dim, num_heads, head_dim)
        self.dropout = dropout
        width = num_heads * self.head_dim
        # creation order q, k, v, out as in nn.MultiHeadAttention: same seeded init
        self.q_proj = nn.Linear(embed_dim, width)
        self.k_proj = nn.Linear(embed_dim, width)
        self.v_proj = nn.Linear(embed_dim, width)
        self.out_proj = nn.Linear(width, embed_dim)

    def head_layout(self):
        """Parameters grouped by head, for structured pruning.

        Returns:
            list[tuple]: ``(param_name, axis, channels_per_head, scores)``; head ``h`` owns
            indices ``h*channels .. (h+1)*channels - 1`` along ``axis``; ``scores`` marks the
            parameters whose L1 norm ranks the heads.
        """
        hd = self.head_dim
        layout = []
        for name in ('q_proj', 'k_proj', 'v_proj'):
            layout += [(f'{name}.weight', 1, hd, True), (f'{name}.bias', 0, hd, False)]
        layout.append(('out_proj.weight', 0, hd, True))
        return layout

    def _split_heads(self, x):
        """``[B, L, heads*hd]`` -> ``[B, heads, L, hd]``."""
        return x.reshape([0, 0, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])

    def forward(self, query, key=None, value=None, attn_mask=None):
        """Args:
            query (Tensor): ``[B, Lq, embed_dim]``.
            key (Tensor): ``[B, Lk, embed_dim]``; default ``query``.
            value (Tensor): ``[B, Lk, embed_dim]``; default ``query``.
            attn_mask (Tensor): broadcastable to ``[B, heads, Lq, Lk]``; bool/int
                (True/1 = may attend) or float (added to the logits).

        Returns:
            Tensor: ``[B, Lq, embed_dim]``.
        """
        key = query if key is None else key
        value = query if value is None else value
        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.k_proj(key))
        v = self._split_heads(self.v_proj(value))
        logits = paddle.matmul(q * (self.head_dim ** -0.5), k, transpose_y=True)
        if attn_mask is not None:
            logits = logits + additive_mask(attn_mask, logits.dtype)
        weights = F.softmax(logits)
        if self.dropout:
            weights = F.dropout(weights, self.dropout, training=self.training,
                                mode='upscale_in_train')
        out = paddle.matmul(weights, v).transpose([0, 2, 1, 3])     # [B, Lq, heads, hd]
        out = out.reshape([0, 0, self.num_heads * self.head_dim])
        return self.out_proj(out)
