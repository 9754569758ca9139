"""Hybrid quantization: which layers of rknn's own graph stay fp16, written into its step-1 cfg."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence


def nodes_of_types(onnx_path: str, op_types: Sequence[str]) -> List[str]:
    """Names of the nodes whose type is in ``op_types``."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in set(op_types)]


# ops rknn fuses into the conv before them (Conv+BN+act -> one "ConvHardSwish" layer)
_CONV_TAIL = ("BatchNormalization", "HardSwish", "Relu", "HardSigmoid", "Sigmoid", "Clip",
              "LeakyRelu")


def float_tensors(graph_path: str, layers: Sequence[str] = (),
                  spans: Sequence[Sequence[str]] = (), op_types: Sequence[str] = (),
                  node_names: Sequence[str] = ()) -> List[str]:
    """Output tensors (= rknn layer names) to mark ``float16`` in a hybrid quantization cfg.

    Args:
        graph_path: An ONNX-format graph: rknn's own ``<stem>.model`` written by
            ``hybrid_quantization_step1`` (what the worker uses: rknn renames and removes
            tensors, e.g. channel-shuffle reshapes, so names are resolved there), or the
            exported ``model.onnx`` (conv and weight names are the same in both).
        layers: Conv layers by node name (``Conv.12``) or weight name (``conv2d_27.w_0``:
            paddle2onnx keeps the Paddle parameter names, as the sensitivity report uses).
            Each conv's input tensor (its producer: rknn stores a tensor in the precision
            of the layer that writes it, so this is what keeps the conv's *input* out of
            int8, as the sensitivity report measures), its output and the BN / activation
            that follow it as their only consumer (the layer rknn fuses, e.g.
            ``ConvHardSwish``) are marked.
        spans: ``[input, output]`` tensor pairs: every node downstream of ``input`` (a graph
            input such as ``image`` included) and upstream of ``output`` is marked.
        op_types: Nodes of these ONNX op types are marked (rknn's own variants too:
            ``Softmax`` matches ``exSoftmax13``).
        node_names: Nodes with these names are marked (the ONNX names of ``op_types``
            nodes, in case rknn changed their type).

    Raises:
        ValueError: A name that is not in the graph.
    """
    import onnx

    g = onnx.load(graph_path, load_external_data=False).graph
    producer, consumers, convs = _index(g)
    missing = [k for k in layers if k not in convs]
    if missing:
        raise ValueError(f"{graph_path}: no Conv node or conv weight named {missing}")
    known = set(producer) | {i.name for i in g.input}
    for src, dst in spans:
        bad = [t for t in (src, dst) if t not in known]
        if bad:
            raise ValueError(f"{graph_path}: no tensor named {bad} (open it in netron for names)")
    marked = [t for k in layers for t in _conv_tensors(convs[k], producer, consumers)]
    marked += _typed_tensors(g, op_types, node_names)
    for src, dst in spans:
        marked += _span_tensors(g, src, dst, producer, consumers)
    return list(dict.fromkeys(marked))  # first mark wins the order


def _index(g):
    """``(producer, consumers, convs)``: tensor -> node writing it, tensor -> nodes reading
    it, and Conv nodes by node name and by weight name."""
    consumers: Dict[str, List[Any]] = {}
    producer: Dict[str, Any] = {}
    convs: Dict[str, Any] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
        for o in n.output:
            producer[o] = n
    for n in g.node:
        if n.op_type == "Conv":
            convs[n.name] = n
            if len(n.input) > 1:
                convs.setdefault(n.input[1], n)
    return producer, consumers, convs


def _conv_tensors(conv, producer, consumers) -> List[str]:
    """A conv's input (rknn quantizes a tensor where it is produced: marking the producer's
    output makes the conv read it in fp16), its output and its fused BN / activation tail."""
    out = []
    src = conv.input[0]
    if src in producer and not producer[src].op_type.startswith("exDataConvert"):
        out.append(src)
    t = conv.output[0]
    out.append(t)
    while len(consumers.get(t, [])) == 1 and consumers[t][0].op_type in _CONV_TAIL:
        t = consumers[t][0].output[0]
        out.append(t)
    return out


def _typed_tensors(g, op_types, node_names) -> List[str]:
    """Outputs of the nodes named in ``node_names`` or of a type in ``op_types`` (rknn's
    ``ex`` variants included)."""
    names = set(node_names)
    return [o for n in g.node
            if n.name in names or any(n.op_type == t or n.op_type.startswith("ex" + t)
                                      for t in op_types)
            for o in n.output]


def _span_tensors(g, src, dst, producer, consumers) -> List[str]:
    """Tensors downstream of ``src`` and upstream of ``dst``, in graph order; rknn's own
    input cast (``exDataConvert``) left alone."""
    down, stack = set(), [src]
    while stack:
        t = stack.pop()
        for n in consumers.get(t, []):
            for o in n.output:
                if o not in down:
                    down.add(o)
                    stack.append(o)
    up, stack = set(), [dst]
    while stack:
        t = stack.pop()
        if t in up or t not in producer:
            continue
        up.add(t)
        stack.extend(producer[t].input)
    return [o for n in g.node if not n.op_type.startswith("exDataConvert")
            for o in n.output if o in down and o in up]


def resolve_float_layers(rknn_graph: str, onnx_path: str, layers: Sequence[str] = (),
                         spans: Sequence[Sequence[str]] = (),
                         op_types: Sequence[str] = ()) -> List[str]:
    """:func:`float_tensors` in rknn's graph, for layers rknn rewrote too.

    ``layers`` may also name rknn layers directly by their output tensor (the names of its
    ``accuracy_analysis`` report, e.g. ``hardswish_4.tmp_0``); those are marked as they are.
    rknn merges some convs into others (e.g. a 1x1 conv after a channel shuffle becomes two
    convs + Add named after their inputs), so their node and weight names are gone from its
    graph. Such a layer is resolved in the exported ONNX instead and the tensors of that
    result that rknn's graph still has (the BN / activation outputs) are marked; a layer with
    none left is reported and skipped.
    """
    import onnx

    g = onnx.load(rknn_graph, load_external_data=False).graph
    keys = {n.name for n in g.node if n.op_type == "Conv"} | {
        n.input[1] for n in g.node if n.op_type == "Conv" and len(n.input) > 1}
    tensors = {o for n in g.node for o in n.output}
    here = [k for k in layers if k in keys]
    direct = [k for k in layers if k not in keys and k in tensors]  # rknn layer (tensor) names
    marked = float_tensors(rknn_graph, here, spans, op_types=op_types,
                           node_names=nodes_of_types(onnx_path, op_types) if op_types else ())
    skipped = []
    marked += [k for k in direct if k not in marked]
    for k in layers:
        if k in keys or k in direct:
            continue
        found = [t for t in float_tensors(onnx_path, [k]) if t in tensors]
        if not found:  # e.g. a head conv + Split rewritten as convs named "<its input>_conv*"
            src = _onnx_conv_input(onnx_path, k)
            found = [n.output[0] for n in g.node if n.op_type == "Conv" and n.input
                     and n.input[0] == src and n.name.startswith(src + "_conv")]
        marked += [t for t in found if t not in marked]
        if not found:
            skipped.append(k)
    if skipped:
        print(f"hybrid: layers not found in rknn's graph, left as rknn built them: {skipped}",
              flush=True)
    return marked


def _onnx_conv_input(onnx_path: str, name: str) -> Optional[str]:
    import onnx

    for n in onnx.load(onnx_path, load_external_data=False).graph.node:
        if n.op_type == "Conv" and (n.name == name or (len(n.input) > 1 and n.input[1] == name)):
            return n.input[0]
    return None


def mark_float16(cfg_path: str, tensors: Sequence[str]) -> int:
    """Add ``tensor: float16`` to ``custom_quantize_layers`` of a step-1 ``.quantization.cfg``.

    Returns:
        int: how many layers the cfg now keeps in float16.
    """
    import yaml

    with open(cfg_path) as f:
        data = yaml.safe_load(f) or {}
    layers = data.get("custom_quantize_layers") or {}
    for t in tensors:
        layers[t] = "float16"
    data["custom_quantize_layers"] = layers
    with open(cfg_path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return sum(v == "float16" for v in layers.values())


def sensitive_layers(path: str, top: int) -> List[str]:
    """The ``top`` most sensitive layer names of a ``tools/quant.py sensitivity`` JSON."""
    import json

    with open(path) as f:
        return [layer["name"] for layer in json.load(f)["layers"][:int(top)]]


# -- op report --------------------------------------------------------------------------------
