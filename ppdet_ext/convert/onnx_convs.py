"""Read the convolutions of an ONNX graph, in graph order, with their folded weights.

A Paddle inference export folds every BatchNorm into the convolution before it, so an
ONNX ``Conv`` node carries the final ``weight [O, I/groups, kH, kW]`` and ``bias [O]`` of
"conv + BN". Weights live in graph initializers; some biases are produced by ``Constant``
nodes instead (paddle2onnx does that for convs that had a bias of their own), so both
places are searched.
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["OnnxConv", "read_onnx_convs", "onnx_input_hw"]


@dataclass
class OnnxConv:
    """One ONNX ``Conv`` node.

    Attributes:
        index: position among the graph's Conv nodes (graph order).
        weight_name: name of the weight tensor (``conv2d_N.w_0`` where Paddle kept it,
            a number where the export folded BN into it).
        weight: ``[O, I/groups, kH, kW]`` float32.
        bias: ``[O]`` float32, or None when the node has no bias input.
        strides, pads, dilations: as in the node (pads ``[top, left, bottom, right]``).
        groups: the ``group`` attribute.
        output: name of the node's output tensor.
    """

    index: int
    weight_name: str
    weight: np.ndarray
    bias: Optional[np.ndarray]
    strides: Tuple[int, ...] = (1, 1)
    pads: Tuple[int, ...] = (0, 0, 0, 0)
    dilations: Tuple[int, ...] = (1, 1)
    groups: int = 1
    output: str = ""


def _constant_values(graph):
    import onnx
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value":
                values[node.output[0]] = numpy_helper.to_array(
                    onnx.helper.get_attribute_value(attr))
    return values


def read_onnx_convs(onnx_path) -> List[OnnxConv]:
    """All Conv nodes of ``onnx_path`` in graph (= Paddle program) order.

    Raises:
        ValueError: a Conv whose weight or bias is not a constant of the graph.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    values = _constant_values(model.graph)
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        w_name = node.input[1]
        if w_name not in values:
            raise ValueError(f"Conv {node.name}: weight {w_name!r} is not a constant")
        bias = None
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in values:
                raise ValueError(f"Conv {node.name}: bias {node.input[2]!r} is not a constant")
            bias = np.asarray(values[node.input[2]], dtype=np.float32).reshape(-1)
        weight = np.asarray(values[w_name], dtype=np.float32)
        convs.append(OnnxConv(
            index=len(convs), weight_name=w_name, weight=weight, bias=bias,
            strides=tuple(attrs.get("strides", (1, 1))),
            pads=tuple(attrs.get("pads", (0, 0, 0, 0))),
            dilations=tuple(attrs.get("dilations", (1, 1))),
            groups=int(attrs.get("group", 1)), output=node.output[0]))
    return convs


def onnx_input_hw(onnx_path) -> Tuple[int, int]:
    """``(H, W)`` of the (fixed-size) ``image`` input of ``onnx_path``."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        if len(dims) == 4 and dims[2] > 0 and dims[3] > 0:
            return dims[2], dims[3]
    raise ValueError(f"{onnx_path}: no fixed-size [1, 3, H, W] input found")
