"""Multi-scale deformable cross-attention with per-level sampling points (RT-DETRv2).

Two sampling methods read the value maps at the predicted locations:

* ``default``: bilinear ``grid_sample`` (zeros outside the map, ``align_corners=False``).
* ``discrete``: each location reads one pixel, ``floor(loc * size + 0.5)`` (the reference
  implementations' rounding, see :mod:`.sampling`), x clipped to ``[0, W-1]`` and y to
  ``[0, H-1]`` separately, with a 1-D ``gather`` over a flattened ``B*heads*H*W`` axis (no
  GridSample/GatherND).
  Rounding has no gradient, so the offset branch is frozen when this method is used.

``discrete`` has a second, deploy-only form for NPUs that run no data-dependent ``Gather``
(:meth:`ExtMSDeformableAttention.set_gather_free`): rknn-toolkit2 2.5.0 puts every ``Gather``
with run-time indices on the CPU (int32 or int64 indices, even with ``op_target='npu'``), and
the ``Floor``/float->int ``Cast`` of the index arithmetic with it. The gather-free form builds
the same one-pixel read as one-hot rows from ``Clip``/``Sub``/``Mul`` and two ``MatMul``
(:func:`.sampling.onehot_index`, :func:`.sampling.attend_gather_free`), all of which run on the
NPU in fp16; measurements in docs/onnx_rknn.md.

Discrete sampling at ``k / size`` reads what bilinear sampling reads at the pixel centre
``(k + 0.5) / size`` (``tests/test_rtdetr_sampling.py``); the gather-free form equals the
gather form (``tests/test_onnx_rtdetr_split.py``).
"""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.nn.initializer import Constant, XavierUniform

from ppdet_ext.registry import register
from .attention import resolve_head_dim
from .sampling import SAMPLING_METHODS, attend_gather_free, sample_bilinear, sample_discrete

__all__ = ['ExtMSDeformableAttention']


@register
class ExtMSDeformableAttention(nn.Layer):
    """Deformable attention over ``len(num_points)`` levels.

    Args:
        embed_dim (int): query / value size.
        num_heads (int): heads.
        num_levels (int): value levels.
        num_points (int | list[int]): sampling points per level (an int means the same
            for every level). Offsets of level ``l`` are scaled by ``1 / num_points[l]``.
        offset_scale (float): offsets are relative to ``offset_scale * box size``.
        method (str): ``default`` or ``discrete`` (see module docstring).
        head_dim (int): channels per head; default ``embed_dim // num_heads``. The value and
            output projections are ``embed_dim <-> num_heads * head_dim``, so heads can be
            pruned without resizing the kept ones.
    """

    def __init__(self, embed_dim=256, num_heads=8, num_levels=3, num_points=4,
                 offset_scale=0.5, method='default', head_dim=None):
        super().__init__()
        if method not in SAMPLING_METHODS:
            raise ValueError(f"method must be one of {SAMPLING_METHODS}, got {method!r}")
        if isinstance(num_points, int):
            num_points = [num_points] * num_levels
        if len(num_points) != num_levels:
            raise ValueError(f"num_points has {len(num_points)} entries for {num_levels} levels")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = resolve_head_dim(embed_dim, num_heads, head_dim)
        self.num_levels = num_levels
        self.num_points = [int(p) for p in num_points]
        self.total_points = sum(self.num_points)
        self.offset_scale = offset_scale
        self.method = method
        self.gather_free = False

        scale = [1.0 / p for p in self.num_points for _ in range(p)]
        self.register_buffer('points_scale', paddle.to_tensor(scale, dtype='float32'),
                             persistable=False)
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * self.total_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * self.total_points)
        self.value_proj = nn.Linear(embed_dim, num_heads * self.head_dim)
        self.output_proj = nn.Linear(num_heads * self.head_dim, embed_dim)
        self._reset_parameters()
        if method == 'discrete':
            self.freeze_offsets()

    def _reset_parameters(self):
        Constant(0.0)(self.sampling_offsets.weight)
        thetas = paddle.arange(self.num_heads, dtype='float32') * (2.0 * math.pi / self.num_heads)
        grid = paddle.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)                 # [heads, 2]
        steps = paddle.concat([paddle.arange(1, p + 1, dtype='float32') for p in self.num_points])
        bias = grid.unsqueeze(1) * steps.reshape([1, -1, 1])          # [heads, P, 2]
        self.sampling_offsets.bias.set_value(bias.flatten())
        Constant(0.0)(self.attention_weights.weight)
        Constant(0.0)(self.attention_weights.bias)
        XavierUniform()(self.value_proj.weight)
        Constant(0.0)(self.value_proj.bias)
        XavierUniform()(self.output_proj.weight)
        Constant(0.0)(self.output_proj.bias)

    def head_layout(self):
        """Parameters grouped by head, for structured pruning: ``(param_name, axis,
        channels_per_head, scores)`` (see ``ExtMultiHeadAttention.head_layout``). Offsets are
        ``[heads, P, 2]`` and weights ``[heads, P]`` flattened, head-major."""
        hd, p = self.head_dim, self.total_points
        return [('sampling_offsets.weight', 1, 2 * p, False),
                ('sampling_offsets.bias', 0, 2 * p, False),
                ('attention_weights.weight', 1, p, False),
                ('attention_weights.bias', 0, p, False),
                ('value_proj.weight', 1, hd, True), ('value_proj.bias', 0, hd, False),
                ('output_proj.weight', 0, hd, True)]

    def set_gather_free(self, enable=True):
        """Deploy switch (``discrete`` only): read the values with one-hot ``MatMul``s instead
        of a ``Gather`` (:func:`attend_gather_free`) — RKNN runs no data-dependent Gather on
        its NPU. Needs fixed shapes; training keeps the Gather. Returns the previous state."""
        if enable and self.method != 'discrete':
            raise ValueError(f"gather-free sampling needs method='discrete', got {self.method!r}")
        previous, self.gather_free = self.gather_free, bool(enable)
        return previous

    def freeze_offsets(self):
        """Stop training the offset branch (used with ``discrete`` sampling)."""
        self.sampling_offsets.weight.stop_gradient = True
        self.sampling_offsets.bias.stop_gradient = True

    def sampling_locations(self, query, reference_points):
        """Normalized sampling locations and their softmaxed weights.

        Args:
            query (Tensor): ``[B, Lq, C]``.
            reference_points (Tensor): ``[B, Lq, 1, 4]`` cxcywh in ``[0, 1]``.

        Returns:
            tuple: locations ``[B, Lq, heads, P, 2]`` (x, y), weights ``[B, Lq, heads, P]``.
        """
        offsets = self.sampling_offsets(query).reshape(
            [0, 0, self.num_heads, self.total_points, 2])
        weights = self.attention_weights(query).reshape(
            [0, 0, self.num_heads, self.total_points])
        weights = F.softmax(weights, axis=-1)
        scale = self.points_scale.reshape([1, 1, 1, -1, 1])
        wh = reference_points[:, :, :, 2:].unsqueeze(2)             # [B, Lq, 1, 1, 2]
        centre = reference_points[:, :, :, :2].unsqueeze(2)
        loc = centre + offsets * scale * wh * self.offset_scale
        return loc, weights

    def attend(self, value, spatial_shapes, loc, weights):
        """Read and weight the values.

        Args:
            value (Tensor): ``[B, sum(h*w), heads, head_dim]``.
            spatial_shapes (list[tuple]): ``(h, w)`` per level.
            loc (Tensor): ``[B, Lq, heads, P, 2]``.
            weights (Tensor): ``[B, Lq, heads, P]``.

        Returns:
            Tensor: ``[B, Lq, heads * head_dim]``.
        """
        lq = loc.shape[1]
        sample = sample_discrete if self.method == 'discrete' else sample_bilinear
        # [B*heads, head_dim, sum(h*w)]
        value = value.transpose([0, 2, 3, 1]).flatten(0, 1)
        loc = loc.transpose([0, 2, 1, 3, 4]).flatten(0, 1)
        if self.gather_free:
            weights = weights.transpose([0, 2, 1, 3]).flatten(0, 1)     # [B*heads, Lq, P]
            out = attend_gather_free(value, spatial_shapes, self.num_points, loc, weights)
            return out.reshape([-1, self.num_heads * self.head_dim, lq]).transpose([0, 2, 1])
        sections = [h * w for h, w in spatial_shapes]
        values = paddle.split(value, sections, axis=-1) if len(sections) > 1 else [value]
        point_splits = paddle.split(loc, self.num_points, axis=2)
        sampled = [sample(v, h, w, l) for v, (h, w), l in
                   zip(values, spatial_shapes, point_splits)]
        sampled = paddle.concat(sampled, axis=-1)                   # [B*heads, hd, Lq, P]
        weights = weights.transpose([0, 2, 1, 3]).flatten(0, 1).unsqueeze(1)
        out = (sampled * weights).sum(-1)                           # [B*heads, hd, Lq]
        return out.reshape([-1, self.num_heads * self.head_dim, lq]).transpose([0, 2, 1])

    def forward(self, query, reference_points, value, spatial_shapes):
        """``query`` ``[B, Lq, C]``, ``reference_points`` ``[B, Lq, 1, 4]``,
        ``value`` ``[B, Lv, C]`` (flattened levels), ``spatial_shapes`` list of ``(h, w)``.
        Returns ``[B, Lq, C]``."""
        v = self.value_proj(value).reshape([0, 0, self.num_heads, self.head_dim])
        loc, weights = self.sampling_locations(query, reference_points)
        return self.output_proj(self.attend(v, spatial_shapes, loc, weights))
