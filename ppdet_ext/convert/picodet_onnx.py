"""Load a Paddle-exported PicoDet ONNX file (BN folded into convs) into ppdet's ``PicoDet``.

The ONNX file of a PaddleDetection release-2.3 PicoDet export has one ``Conv`` per conv
of the network (133 for PicoDet-S) and no BatchNorm: each "conv + BN" pair was folded into
one conv with a bias. Its node order is the order the Paddle program ran the convs, which
is the order ppdet's dygraph ``PicoDet`` runs them. The mapping is therefore:

1. run the ppdet model once on a small input with hooks and record, in execution order,
   every ``Conv2D`` and the BatchNorm (if any) that consumes that conv's output tensor;
2. pair the i-th ONNX Conv with the i-th executed ``Conv2D`` and check, for every pair,
   kernel shape, stride, padding, dilation and groups; check that every ONNX conv and every
   model conv is used exactly once; where the export kept Paddle's creation-order parameter
   name (``conv2d_N.w_0``: convs that had no BN), check it equals the ppdet parameter name
   (the model is built inside a fresh ``unique_name`` guard, so names are deterministic);
3. copy the folded weight into the conv; the folded bias goes into the conv's own bias if
   it has one, otherwise into the following BatchNorm, which is set to identity.

Identity BatchNorm: Paddle evaluates ``(x - mean) / sqrt(var + eps) * gamma + beta`` in
float32, so ``var`` is chosen as the float32 value for which ``float32(var + eps) == 1``
exactly (``1 - eps`` rounded; checked, not assumed). Then the BN is ``x + beta``
bit-for-bit up to the add, and a later BN fold (Paddle Inference ``conv_bn_fuse_pass``)
reproduces the ONNX weights exactly.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from .onnx_convs import OnnxConv, onnx_input_hw, read_onnx_convs

__all__ = [
    "ConvSlot", "MappingReport", "trace_conv_slots", "map_convs", "load_folded_weights",
    "identity_bn_variance", "build_model", "convert_picodet_onnx", "save_weights",
]

_PADDLE_NAME = re.compile(r"^conv2d_\d+\.w_0$")


@dataclass
class ConvSlot:
    """A ``Conv2D`` of the ppdet model, in execution order, with the BN that follows it.

    Attributes:
        name: sublayer path of the conv (``backbone.2_1._conv_dw_1._conv``).
        conv: the ``paddle.nn.Conv2D``.
        bn: the BatchNorm layer whose input is this conv's output, or None.
        bn_name: its sublayer path.
    """

    name: str
    conv: object
    bn: Optional[object] = None
    bn_name: Optional[str] = None


@dataclass
class MappingReport:
    """What ``map_convs`` checked; every count is over Conv nodes/layers."""

    onnx_convs: int = 0
    model_convs: int = 0
    mapped: int = 0
    into_bn: int = 0            # folded bias written to an identity BatchNorm
    into_conv_bias: int = 0     # written to the conv's own bias
    names_checked: int = 0      # ONNX kept ``conv2d_N.w_0`` and it equals ppdet's name
    bn_variance: float = 0.0
    bn_epsilons: List[float] = field(default_factory=list)
    pairs: List[tuple] = field(default_factory=list)   # (onnx index, weight name, slot name)

    def summary(self) -> str:
        return (f"{self.mapped}/{self.onnx_convs} ONNX convs -> {self.model_convs} ppdet convs "
                f"(each used once; shapes/stride/pad/groups equal); folded bias -> BN: "
                f"{self.into_bn}, -> conv bias: {self.into_conv_bias}; Paddle names checked: "
                f"{self.names_checked}; identity BN var={self.bn_variance!r} "
                f"eps={sorted(set(self.bn_epsilons))}")


def _is_bn(layer):
    import paddle

    return isinstance(layer, (paddle.nn.layer.norm._BatchNormBase, paddle.nn.BatchNorm))


def trace_conv_slots(model, image_hw=(128, 128)) -> List[ConvSlot]:
    """Run ``model`` (eval) once on zeros ``[1, 3, H, W]`` and list its convs in run order.

    Raises:
        ValueError: a conv runs twice (shared weights cannot be mapped one-to-one), or
            a model conv never runs.
    """
    import paddle

    names = {id(layer): name for name, layer in model.named_sublayers()}
    slots, by_output, keep, hooks = [], {}, [], []

    def conv_hook(layer, inputs, output):
        if any(s.conv is layer for s in slots):
            raise ValueError(f"conv {names[id(layer)]} runs twice; cannot map one-to-one")
        slots.append(ConvSlot(names[id(layer)], layer))
        by_output[id(output)] = slots[-1]
        keep.append(output)   # keep alive: ids must not be reused during the trace

    def bn_pre_hook(layer, inputs):
        slot = by_output.get(id(inputs[0]))
        if slot is not None:
            slot.bn, slot.bn_name = layer, names[id(layer)]

    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Conv2D):
            hooks.append(layer.register_forward_post_hook(conv_hook))
        elif _is_bn(layer):
            hooks.append(layer.register_forward_pre_hook(bn_pre_hook))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            image = paddle.zeros([1, 3, *image_hw], dtype="float32")
            _run_model_convs(model, image)
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    all_convs = [n for n, l in model.named_sublayers() if isinstance(l, paddle.nn.Conv2D)]
    missing = sorted(set(all_convs) - {s.name for s in slots})
    if missing:
        raise ValueError(f"model convs that never ran: {missing}")
    return slots


def _run_model_convs(model, image):
    """The model's own eval forward up to the raw head outputs (no decode, no NMS)."""
    feats = model.neck(model.backbone({"image": image}))
    return model.head(feats, export_post_process=False)


def _norm_pair(value):
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def _conv_geometry(conv):
    """``(stride, pads[t, l, b, r], dilation, groups)`` of a ``paddle.nn.Conv2D``."""
    pad = conv._padding
    if isinstance(pad, str):
        raise ValueError(f"string padding {pad!r} is not supported")
    if isinstance(pad, int):
        pads = (pad,) * 4
    else:
        pad = [int(p) for p in pad]
        if len(pad) == 2:
            pads = (pad[0], pad[1], pad[0], pad[1])
        elif len(pad) == 4:   # paddle order [top, bottom, left, right]
            pads = (pad[0], pad[2], pad[1], pad[3])
        else:
            raise ValueError(f"unsupported padding {pad!r}")
    return _norm_pair(conv._stride), pads, _norm_pair(conv._dilation), int(conv._groups)


def map_convs(onnx_convs: List[OnnxConv], slots: List[ConvSlot], *, check_names=True):
    """Pair ONNX convs with model convs by execution order and check every pair.

    Returns:
        MappingReport with ``pairs`` filled.

    Raises:
        ValueError: counts differ, or any pair disagrees in shape/stride/pads/groups/
            dilation or (``check_names``) in a kept Paddle parameter name.
    """
    report = MappingReport(onnx_convs=len(onnx_convs), model_convs=len(slots))
    if len(onnx_convs) != len(slots):
        raise ValueError(f"{len(onnx_convs)} ONNX convs vs {len(slots)} model convs")
    errors = []
    for oc, slot in zip(onnx_convs, slots):
        conv = slot.conv
        stride, pads, dil, groups = _conv_geometry(conv)
        want = (tuple(conv.weight.shape), stride, pads, dil, groups)
        got = (tuple(oc.weight.shape), tuple(oc.strides), tuple(oc.pads),
               tuple(oc.dilations), oc.groups)
        if want != got:
            errors.append(f"#{oc.index} {oc.weight_name} {got} != {slot.name} {want}")
        if check_names and _PADDLE_NAME.match(oc.weight_name):
            if conv.weight.name != oc.weight_name:
                errors.append(f"#{oc.index} name {oc.weight_name} != {slot.name} "
                              f"({conv.weight.name})")
            else:
                report.names_checked += 1
        if conv.bias is None and slot.bn is None and oc.bias is not None \
                and np.any(oc.bias != 0):
            errors.append(f"#{oc.index}: {slot.name} has neither bias nor BN for the bias")
        report.pairs.append((oc.index, oc.weight_name, slot.name))
    used_onnx = {p[0] for p in report.pairs}
    used_model = {p[2] for p in report.pairs}
    if len(used_onnx) != len(onnx_convs) or len(used_model) != len(slots):
        errors.append("a conv is used more than once")
    if errors:
        raise ValueError("ONNX -> PicoDet mapping failed:\n  " + "\n  ".join(errors))
    report.mapped = len(report.pairs)
    return report


def identity_bn_variance(epsilon: float) -> np.float32:
    """The float32 ``var`` with ``float32(var + float32(eps)) == 1`` exactly.

    Raises:
        ValueError: no such value within a few ULPs of ``1 - eps``.
    """
    eps = np.float32(epsilon)
    var = np.float32(1.0) - eps
    for _ in range(8):
        total = np.float32(var + eps)
        if total == np.float32(1.0):
            return var
        var = np.nextafter(var, np.float32(2.0) if total < 1 else np.float32(0.0),
                           dtype=np.float32)
    raise ValueError(f"no float32 variance makes var + {epsilon} == 1")


def load_folded_weights(onnx_convs, slots, report: MappingReport):
    """Write folded ONNX weights into the mapped model convs (see module docstring)."""
    for oc, slot in zip(onnx_convs, slots):
        conv = slot.conv
        conv.weight.set_value(oc.weight.astype("float32"))
        bias = oc.bias if oc.bias is not None else np.zeros(oc.weight.shape[0], "float32")
        if conv.bias is not None:
            conv.bias.set_value(bias.reshape(conv.bias.shape).astype("float32"))
            report.into_conv_bias += 1
            if slot.bn is not None:   # a conv with a bias and a BN: make the BN identity
                _set_identity_bn(slot.bn, np.zeros_like(bias), report)
        elif slot.bn is not None:
            _set_identity_bn(slot.bn, bias, report)
            report.into_bn += 1
    return report


def _set_identity_bn(bn, beta, report):
    eps = float(bn._epsilon)
    var = identity_bn_variance(eps)
    n = bn.weight.shape[0]
    bn.weight.set_value(np.ones(n, "float32"))
    bn.bias.set_value(np.asarray(beta, "float32").reshape(n))
    bn._mean.set_value(np.zeros(n, "float32"))
    bn._variance.set_value(np.full(n, var, "float32"))
    report.bn_variance = float(var)
    report.bn_epsilons.append(eps)


def build_model(config_path, overrides=None):
    """Build ``architecture`` of a ppdet config in a fresh ``unique_name`` guard (eval).

    The guard makes parameter names follow creation order from ``conv2d_0``, which is how
    the names the export kept are checked. The config goes through
    ``ppdet_ext.engine.config.load_config`` (validated; ppdet's global config reset).

    Returns:
        (model, cfg): the model in eval mode and ppdet's merged global config.
    """
    import paddle
    from ppdet.core.workspace import create

    from ..engine.config import load_config

    cfg, _ = load_config(str(config_path), overrides)
    with paddle.utils.unique_name.guard():
        model = create(cfg["architecture"])
    model.eval()
    return model, cfg


def convert_picodet_onnx(onnx_path, config_path, *, model=None):
    """Build the ppdet PicoDet of ``config_path`` and load the ONNX weights into it.

    Args:
        onnx_path: a Paddle-exported PicoDet ONNX file (BN folded).
        config_path: ppdet config whose ``architecture`` is ``PicoDet``.
        model: optional model to load into; it must have been built in a fresh
            ``unique_name`` guard for the name check (``build_model`` does that).

    Returns:
        (model in eval mode, MappingReport)
    """
    if model is None:
        model, _ = build_model(config_path)
    onnx_convs = read_onnx_convs(onnx_path)
    slots = trace_conv_slots(model, onnx_input_hw(onnx_path))
    report = map_convs(onnx_convs, slots)
    load_folded_weights(onnx_convs, slots, report)
    model.eval()
    return model, report


def save_weights(model, out_path) -> Path:
    """Save ``model.state_dict()`` as ``<out>.pdparams`` (suffix optional in ``out_path``)."""
    import paddle

    out = Path(out_path)
    if out.suffix != ".pdparams":
        out = out.with_name(out.name + ".pdparams")
    out.parent.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), str(out))
    return out
