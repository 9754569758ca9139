"""RT-DETRv2 decoder: IoU-aware top-k query selection, denoising, deformable decoder.

Training returns every layer's boxes/logits (for the auxiliary losses), the encoder
proposals and the denoising outputs; inference runs layers ``0..eval_idx`` only.
"""
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.nn.initializer import Constant, XavierUniform

from ppdet.core.workspace import serializable

from ppdet_ext.registry import register
from .box_ops import inverse_sigmoid
from .csp_rep import ExtConvNormAct
from .decoder_layer import ExtMLP, ExtRTDETRDecoderLayer
from .denoising import build_denoising_group
from .shapes import spatial_hw

__all__ = ['ExtRTDETRDecoder', 'gather_rows']

# logit given to anchors too close to the border; finite so exported graphs hold no inf
_INVALID_ANCHOR_LOGIT = 1e4
# inverse_sigmoid(sigmoid(z)) == clip(z, -c, c) with c = log(1 / eps), eps = 1e-5 (box_ops)
_LOGIT_CLIP = math.log(1.0 / 1e-5)


def gather_rows(x, index):
    """``x`` ``[B, L, C]``, ``index`` ``[B, K]`` int64 -> ``[B, K, C]``.

    Uses a 1-D ``gather`` over the flattened ``B*L`` axis: no GatherND, which some engines
    lack. (rknn-toolkit2 2.5.0 still runs any run-time-indexed Gather on the CPU, so the RKNN
    split does this query selection in numpy: docs/onnx_rknn.md.)
    """
    b, length = x.shape[0], x.shape[1]
    if b is None or b < 0 or length is None or length < 0:
        shape = paddle.shape(x)
        b = shape[0] if (b is None or b < 0) else b
        length = shape[1] if (length is None or length < 0) else length
    offsets = (paddle.arange(b, dtype='int64') * length).unsqueeze(-1)
    flat = (index + offsets).flatten()
    out = paddle.gather(x.flatten(0, 1), flat, axis=0)
    return out.reshape([-1, index.shape[1], x.shape[2]])


def _anchors_numpy(spatial_shapes, grid_size, eps):
    anchors = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        gy, gx = np.meshgrid(np.arange(h, dtype='float32'), np.arange(w, dtype='float32'),
                             indexing='ij')
        xy = (np.stack([gx, gy], -1).reshape([-1, 2]) + 0.5) / np.array([w, h], 'float32')
        wh = np.full_like(xy, grid_size * 2.0 ** lvl)
        anchors.append(np.concatenate([xy, wh], -1))
    anchors = np.concatenate(anchors, 0)[None]
    valid = np.all((anchors > eps) & (anchors < 1 - eps), -1, keepdims=True)
    logit = np.log(anchors / (1 - anchors))
    logit = np.where(valid, logit, _INVALID_ANCHOR_LOGIT).astype('float32')
    return logit, valid.astype('float32')


def _anchors_paddle(spatial_shapes, grid_size, eps):
    """Same as :func:`_anchors_numpy` for sizes known only at run time (dynamic export)."""
    anchors = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        gy, gx = paddle.meshgrid(paddle.arange(h, dtype='float32'),
                                 paddle.arange(w, dtype='float32'))
        size = paddle.stack([paddle.to_tensor(w).astype('float32').reshape([]),
                             paddle.to_tensor(h).astype('float32').reshape([])])
        xy = (paddle.stack([gx, gy], -1).reshape([-1, 2]) + 0.5) / size
        wh = paddle.full_like(xy, grid_size * 2.0 ** lvl)
        anchors.append(paddle.concat([xy, wh], -1))
    anchors = paddle.concat(anchors, 0).unsqueeze(0)
    valid = paddle.all((anchors > eps) & (anchors < 1 - eps), -1, keepdim=True)
    logit = paddle.log(anchors / (1 - anchors))
    logit = paddle.where(valid, logit, paddle.full_like(logit, _INVALID_ANCHOR_LOGIT))
    return logit, valid.astype('float32')


@register
@serializable
class ExtRTDETRDecoder(nn.Layer):
    """Query selection + deformable transformer decoder + prediction heads.

    Args:
        num_classes (int): classes.
        hidden_dim (int): query / memory size.
        num_queries (int): queries taken from the encoder tokens (top-k).
        feat_channels (list[int]): channels per memory level (from ``input_shape``).
        feat_strides (list[int]): strides per memory level (from ``input_shape``).
        num_points (int | list[int]): deformable sampling points per level.
        nhead (int): heads.
        head_dim (int): channels per head; default ``hidden_dim // nhead`` (set it to keep
            the trained head size when heads are pruned).
        num_layers (int): decoder layers run in training.
        dim_feedforward (int): FFN size.
        dropout (float): dropout.
        activation (str): FFN activation.
        num_denoising (int): denoising slots (0 disables denoising).
        label_noise_ratio (float): denoising label noise.
        box_noise_scale (float): denoising box noise.
        eval_idx (int): last layer run at inference (negative counts from the end).
        sampling_method (str): ``default`` (bilinear) | ``discrete`` (nearest pixel).
        anchor_grid_size (float): anchor size at stride 8 (doubles per level).
        anchor_eps (float): anchors closer than this to the border are invalid.
    """
    __shared__ = ['num_classes', 'hidden_dim']

    def __init__(self, num_classes=80, hidden_dim=256, num_queries=300,
                 feat_channels=(256, 256, 256), feat_strides=(8, 16, 32), num_points=4,
                 nhead=8, num_layers=6, dim_feedforward=1024, dropout=0.0, activation='relu',
                 num_denoising=100, label_noise_ratio=0.5, box_noise_scale=1.0, eval_idx=-1,
                 sampling_method='default', anchor_grid_size=0.05, anchor_eps=1e-2,
                 head_dim=None):
        super().__init__()
        self.num_classes, self.hidden_dim = num_classes, hidden_dim
        self.num_queries = num_queries
        self.feat_strides = list(feat_strides)
        self.num_levels = len(self.feat_strides)
        self.num_layers = num_layers
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx
        if not 0 <= self.eval_idx < num_layers:
            raise ValueError(f"eval_idx {eval_idx} out of range for {num_layers} layers")
        self.num_denoising = num_denoising
        self.label_noise_ratio, self.box_noise_scale = label_noise_ratio, box_noise_scale
        self.sampling_method = sampling_method
        self.anchor_grid_size, self.anchor_eps = anchor_grid_size, anchor_eps
        self._anchor_cache = {}

        self.input_proj = nn.LayerList([
            ExtConvNormAct(c, hidden_dim, 1, act=None) for c in feat_channels])
        self.layers = nn.LayerList([
            ExtRTDETRDecoderLayer(hidden_dim, nhead, dim_feedforward, dropout, activation,
                                  self.num_levels, num_points, sampling_method,
                                  head_dim=head_dim)
            for _ in range(num_layers)])
        self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim,
                                                  padding_idx=num_classes)
        self.query_pos_head = ExtMLP(4, 2 * hidden_dim, hidden_dim, num_layers=2)
        self.enc_output_proj = nn.Linear(hidden_dim, hidden_dim)
        self.enc_output_norm = nn.LayerNorm(hidden_dim)
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = ExtMLP(hidden_dim, hidden_dim, 4, num_layers=3)
        self.dec_score_head = nn.LayerList([
            nn.Linear(hidden_dim, num_classes) for _ in range(num_layers)])
        self.dec_bbox_head = nn.LayerList([
            ExtMLP(hidden_dim, hidden_dim, 4, num_layers=3) for _ in range(num_layers)])
        self._reset_parameters()

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {'feat_channels': [s.channels for s in input_shape],
                'feat_strides': [s.stride for s in input_shape]}

    def _reset_parameters(self):
        bias_cls = -math.log((1 - 0.01) / 0.01)
        for head in [self.enc_score_head, *self.dec_score_head]:
            Constant(bias_cls)(head.bias)
        for mlp in [self.enc_bbox_head, *self.dec_bbox_head]:
            Constant(0.0)(mlp.layers[-1].weight)
            Constant(0.0)(mlp.layers[-1].bias)
        XavierUniform()(self.enc_output_proj.weight)
        for layer in self.query_pos_head.layers:
            XavierUniform()(layer.weight)
        for proj in self.input_proj:
            XavierUniform()(proj.conv2d.weight)

    def convert_to_deploy(self):
        """Drop the decoder layers and heads that inference never runs (after eval_idx)."""
        keep = self.eval_idx + 1
        self.layers = nn.LayerList(list(self.layers)[:keep])
        self.dec_score_head = nn.LayerList(list(self.dec_score_head)[:keep])
        self.dec_bbox_head = nn.LayerList(list(self.dec_bbox_head)[:keep])
        self.num_layers = keep

    def _anchors(self, spatial_shapes):
        if all(isinstance(v, int) for hw in spatial_shapes for v in hw):
            key = tuple(spatial_shapes)
            if key not in self._anchor_cache:
                self._anchor_cache[key] = _anchors_numpy(
                    spatial_shapes, self.anchor_grid_size, self.anchor_eps)
            logit, valid = self._anchor_cache[key]
            return paddle.to_tensor(logit), paddle.to_tensor(valid)
        return _anchors_paddle(spatial_shapes, self.anchor_grid_size, self.anchor_eps)

    def _flatten_memory(self, feats):
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        shapes = [spatial_hw(f) for f in proj]
        memory = paddle.concat([f.flatten(2).transpose([0, 2, 1]) for f in proj], axis=1)
        return memory, shapes

    def encoder_outputs(self, feats):
        """Per-token outputs before the top-k query selection (public hook for exporters
        that cut the graph here, e.g. an NPU/CPU split).

        Args:
            feats (list[Tensor]): neck maps ``[B, C_l, H_l, W_l]``, fine to coarse.

        Returns:
            tuple: ``memory [B, L, D]`` (decoder value), ``spatial_shapes`` (list of
            ``(h, w)``), ``out_memory [B, L, D]`` (query content source),
            ``enc_logits [B, L, C]``, ``enc_coord [B, L, 4]`` (cxcywh logits, anchors added).
        """
        memory, spatial_shapes = self._flatten_memory(feats)
        anchors, valid = self._anchors(spatial_shapes)
        out_memory = self.enc_output_norm(self.enc_output_proj(memory * valid))
        enc_logits = self.enc_score_head(out_memory)
        enc_coord = self.enc_bbox_head(out_memory) + anchors
        return memory, spatial_shapes, out_memory, enc_logits, enc_coord

    def decode_queries(self, target, ref_unact, memory, spatial_shapes, attn_mask=None):
        """Run the decoder layers (public hook, see :meth:`encoder_outputs`).

        Args:
            target (Tensor): ``[B, Q, D]`` query content.
            ref_unact (Tensor): ``[B, Q, 4]`` reference boxes, cxcywh logits.
            memory (Tensor): ``[B, L, D]``.
            spatial_shapes (list[tuple]): ``(h, w)`` per level.
            attn_mask (Tensor): optional bool ``[Q, Q]``, True = may attend.

        Returns:
            tuple: lists of boxes ``[B, Q, 4]`` (cxcywh, normalized) and logits
            ``[B, Q, C]``: one per layer in training, only layer ``eval_idx`` otherwise.
        """
        return self._decode(target, ref_unact, memory, spatial_shapes, attn_mask)

    def decode_from_logits(self, target, ref_unact, memory, spatial_shapes):
        """Inference decoding (layers ``0..eval_idx``) that carries the reference boxes as
        logits ``z`` from layer to layer: ``inverse_sigmoid(sigmoid(z))`` becomes
        ``clip(z, -c, c)``, so the graph has no ``Log`` (an RK NPU runs Log on the CPU, and in
        fp16 the round trip loses the logit of boxes near 0 or 1). Equals
        :meth:`decode_queries` in eval mode to float rounding (~1e-7), not bit for bit.

        Args:
            target (Tensor): ``[B, Q, D]`` query content.
            ref_unact (Tensor): ``[B, Q, 4]`` reference boxes, cxcywh logits.
            memory (Tensor): ``[B, L, D]``.
            spatial_shapes (list[tuple]): ``(h, w)`` per level.

        Returns:
            tuple: box logits ``[B, Q, 4]`` (their sigmoid: cxcywh, normalized), class
            logits ``[B, Q, C]`` of layer ``eval_idx``.
        """
        z, out = ref_unact, target
        for i in range(self.eval_idx + 1):
            ref = F.sigmoid(z)
            pos = self.query_pos_head(ref)
            out = self.layers[i](out, ref.unsqueeze(2), memory, spatial_shapes, None, pos)
            z = self.dec_bbox_head[i](out) + z.clip(min=-_LOGIT_CLIP, max=_LOGIT_CLIP)
        return z, self.dec_score_head[self.eval_idx](out)

    def _select_queries(self, out_memory, enc_logits, enc_coord):
        """Top-k encoder tokens by best class score (IoU-aware through the VFL loss)."""
        topk_ind = paddle.topk(enc_logits.max(-1), self.num_queries, axis=1)[1]
        target = gather_rows(out_memory, topk_ind).detach()
        ref_unact = gather_rows(enc_coord, topk_ind)
        topk_logits = gather_rows(enc_logits, topk_ind)
        return target, ref_unact, topk_logits

    def _decode(self, target, ref_unact, memory, spatial_shapes, attn_mask):
        ref = F.sigmoid(ref_unact)
        ref_prev = ref
        out = target
        boxes, logits = [], []
        for i, layer in enumerate(self.layers):
            pos = self.query_pos_head(ref)
            out = layer(out, ref.unsqueeze(2), memory, spatial_shapes, attn_mask, pos)
            delta = self.dec_bbox_head[i](out)
            inter = F.sigmoid(delta + inverse_sigmoid(ref))
            if self.training:
                logits.append(self.dec_score_head[i](out))
                # boxes of later layers keep the gradient path through the previous layer
                boxes.append(inter if i == 0 else F.sigmoid(delta + inverse_sigmoid(ref_prev)))
            elif i == self.eval_idx:
                logits.append(self.dec_score_head[i](out))
                boxes.append(inter)
                break
            ref_prev = inter
            ref = inter.detach() if self.training else inter
        return boxes, logits

    def forward(self, feats, inputs=None):
        """Args:
            feats (list[Tensor]): neck maps ``[B, C_l, H_l, W_l]``, fine to coarse.
            inputs (dict): batch; training reads ``gt_class`` / ``gt_bbox``
                (lists, cxcywh normalized).

        Returns:
            eval: ``(boxes [B, Q, 4] cxcywh normalized, logits [B, Q, C])``.
            train: dict with ``dec_boxes``/``dec_logits`` (lists per layer, ``[B, Q, *]``),
            ``enc_boxes``/``enc_logits``, ``dn_boxes``/``dn_logits`` (lists, or None),
            ``dn_meta``.
        """
        memory, spatial_shapes, out_memory, enc_logits, enc_coord = self.encoder_outputs(feats)
        target, ref_unact, enc_logits = self._select_queries(out_memory, enc_logits, enc_coord)
        enc_boxes = F.sigmoid(ref_unact)
        ref_unact = ref_unact.detach()

        dn = None
        if self.training and self.num_denoising > 0 and inputs is not None:
            dn = build_denoising_group(
                list(inputs['gt_class']), list(inputs['gt_bbox']),
                num_classes=self.num_classes, num_queries=self.num_queries,
                class_embed=self.denoising_class_embed, num_denoising=self.num_denoising,
                label_noise_ratio=self.label_noise_ratio, box_noise_scale=self.box_noise_scale)
        attn_mask = None
        if dn is not None:
            dn_query, dn_ref, attn_mask, dn_meta = dn
            target = paddle.concat([dn_query, target], axis=1)
            ref_unact = paddle.concat([dn_ref, ref_unact], axis=1)

        boxes, logits = self.decode_queries(target, ref_unact, memory, spatial_shapes, attn_mask)
        if not self.training:
            return boxes[-1], logits[-1]

        out = {'enc_boxes': enc_boxes, 'enc_logits': enc_logits,
               'dn_boxes': None, 'dn_logits': None, 'dn_meta': None}
        if dn is not None:
            split = dn_meta['num_split']
            out['dn_boxes'] = [paddle.split(b, split, axis=1)[0] for b in boxes]
            out['dn_logits'] = [paddle.split(l, split, axis=1)[0] for l in logits]
            boxes = [paddle.split(b, split, axis=1)[1] for b in boxes]
            logits = [paddle.split(l, split, axis=1)[1] for l in logits]
            out['dn_meta'] = dn_meta
        out['dec_boxes'], out['dec_logits'] = boxes, logits
        return out
