"""RT-DETR hybrid encoder: AIFI (intra-scale attention on stride 32) + CCFM (CNN fusion)."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ppdet.core.workspace import serializable
from ppdet.modeling.shape_spec import ShapeSpec

from ppdet_ext.registry import register
from .attention import ExtMultiHeadAttention
from .csp_rep import ExtConvNormAct, ExtCSPRepLayer, get_activation
from .position import sincos_2d_embedding
from .shapes import spatial_hw

__all__ = ['ExtAIFILayer', 'ExtHybridEncoder']


@register
class ExtAIFILayer(nn.Layer):
    """Post-norm transformer encoder layer; position added to queries and keys only.

    Args:
        d_model (int): token size.
        nhead (int): attention heads.
        dim_feedforward (int): FFN hidden size.
        dropout (float): dropout in attention and FFN.
        activation (str): FFN activation.
        head_dim (int): channels per head; default ``d_model // nhead``.
    """

    def __init__(self, d_model, nhead=8, dim_feedforward=1024, dropout=0.0,
                 activation='gelu', head_dim=None):
        super().__init__()
        self.self_attn = ExtMultiHeadAttention(d_model, nhead, dropout=dropout, head_dim=head_dim)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.activation = get_activation(activation)

    def forward(self, src, pos):
        """``src`` ``[B, N, C]``, ``pos`` ``[1, N, C]`` -> ``[B, N, C]``."""
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, value=src)))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


def _upsample_like(x, ref):
    """Nearest 2x upsample of ``x``, cropped to ``ref``'s size (odd inputs: ceil sizes)."""
    up = F.interpolate(x, scale_factor=2.0, mode='nearest')
    h, w = spatial_hw(ref)
    if isinstance(h, int) and isinstance(w, int) and up.shape[2] == h and up.shape[3] == w:
        return up
    return up[:, :, :h, :w]


@register
@serializable
class ExtHybridEncoder(nn.Layer):
    """Project backbone maps to ``hidden_dim``, run AIFI on the top level, fuse with CCFM.

    Args:
        in_channels (list[int]): backbone channels per level (from ``input_shape``).
        feat_strides (list[int]): backbone strides per level (from ``input_shape``).
        hidden_dim (int): channels of every output level.
        use_encoder_idx (list[int]): levels that get the transformer encoder (AIFI).
        num_encoder_layers (int): AIFI layers per such level.
        nhead (int): AIFI heads.
        head_dim (int): AIFI channels per head; default ``hidden_dim // nhead`` (set it to
            keep the trained head size when heads are pruned).
        dim_feedforward (int): AIFI FFN size.
        dropout (float): AIFI dropout.
        enc_act (str): AIFI FFN activation.
        pe_temperature (float): sin-cos embedding temperature.
        expansion (float): CSP-Rep hidden-channel ratio.
        depth_mult (float): CSP-Rep depth multiplier (3 RepVGG blocks at 1.0).
        act (str): CCFM activation.
    """
    __shared__ = ['hidden_dim']

    def __init__(self, in_channels=(512, 1024, 2048), feat_strides=(8, 16, 32),
                 hidden_dim=256, use_encoder_idx=(2,), num_encoder_layers=1, nhead=8,
                 dim_feedforward=1024, dropout=0.0, enc_act='gelu', pe_temperature=10000.0,
                 expansion=1.0, depth_mult=1.0, act='silu', head_dim=None):
        super().__init__()
        self.in_channels = list(in_channels)
        self.feat_strides = list(feat_strides)
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = list(use_encoder_idx)
        self.pe_temperature = pe_temperature
        n = len(self.in_channels)

        self.input_proj = nn.LayerList([
            ExtConvNormAct(c, hidden_dim, 1, act=None) for c in self.in_channels])
        self.encoder = nn.LayerList([
            nn.LayerList([
                ExtAIFILayer(hidden_dim, nhead, dim_feedforward, dropout, enc_act,
                             head_dim=head_dim)
                for _ in range(num_encoder_layers)])
            for _ in self.use_encoder_idx])

        num_blocks = round(3 * depth_mult)
        self.lateral_convs = nn.LayerList([
            ExtConvNormAct(hidden_dim, hidden_dim, 1, act=act) for _ in range(n - 1)])
        self.fpn_blocks = nn.LayerList([
            ExtCSPRepLayer(hidden_dim * 2, hidden_dim, num_blocks, expansion, act)
            for _ in range(n - 1)])
        self.downsample_convs = nn.LayerList([
            ExtConvNormAct(hidden_dim, hidden_dim, 3, stride=2, act=act) for _ in range(n - 1)])
        self.pan_blocks = nn.LayerList([
            ExtCSPRepLayer(hidden_dim * 2, hidden_dim, num_blocks, expansion, act)
            for _ in range(n - 1)])

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {'in_channels': [s.channels for s in input_shape],
                'feat_strides': [s.stride for s in input_shape]}

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self.hidden_dim, stride=s) for s in self.feat_strides]

    def _encode(self, x, layers):
        h, w = spatial_hw(x)
        tokens = x.flatten(2).transpose([0, 2, 1])
        pos = sincos_2d_embedding(h, w, self.hidden_dim, self.pe_temperature)
        for layer in layers:
            tokens = layer(tokens, pos)
        return tokens.transpose([0, 2, 1]).reshape([0, self.hidden_dim, h, w])

    def forward(self, feats, inputs=None):
        """``feats``: backbone maps, fine to coarse -> list of ``[B, hidden_dim, Hi, Wi]``."""
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} levels, got {len(feats)}")
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        for layers, idx in zip(self.encoder, self.use_encoder_idx):
            proj[idx] = self._encode(proj[idx], layers)

        n = len(proj)
        inner = [proj[-1]]  # top-down, coarse to fine
        for k, idx in enumerate(range(n - 1, 0, -1)):
            high = self.lateral_convs[k](inner[0])
            inner[0] = high
            low = proj[idx - 1]
            inner.insert(0, self.fpn_blocks[k](
                paddle.concat([_upsample_like(high, low), low], axis=1)))

        outs = [inner[0]]  # bottom-up, fine to coarse
        for k in range(n - 1):
            down = self.downsample_convs[k](outs[-1])
            outs.append(self.pan_blocks[k](paddle.concat([down, inner[k + 1]], axis=1)))
        return outs
