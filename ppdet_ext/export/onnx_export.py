"""Paddle export directory -> ``model.onnx`` (paddle2onnx 1.3.1), metadata inside the file.

The ONNX graph keeps the contract of docs/export_format.md: one input ``image``
``[B, 3, H, W]`` and the raw outputs named as ``outputs.names`` in ``infer_cfg.yml``
(``scores [B, N, C]``, ``boxes [B, N, 4]`` xyxy in input pixels; no NMS). Dynamic dimensions
get readable names (``batch``, ``height``, ``width``, ``num_boxes``).

Metadata travels with the ``.onnx`` in two ways: the file sits in the export directory next to
``infer_cfg.yml`` (what ``deploy/`` reads), and the same YAML is embedded in the model's
``metadata_props`` (``infer_cfg``; plus ``label_list``, ``input_shape``, ``preprocess`` as
JSON), so a bare ``model.onnx`` copied elsewhere still says how to feed it
(:func:`read_onnx_metadata`).

Paddle 2.6.2 needs paddle2onnx 1.3.1 (2.x refuses Paddle < 3.0; docs/stack.md).
"""
import json
import os
import tempfile

from ppdet_ext_deploy.meta import copy_meta, dumps_meta, loads_meta, read_meta_dict

from .metadata import ExportError

__all__ = ["export_onnx", "fold_fixed_shape", "paddle_to_onnx", "read_onnx_metadata", "simplify_onnx",
           "DEFAULT_OPSET"]

DEFAULT_OPSET = 16  # GridSample (RT-DETR default sampling) needs >= 16
SIMPLIFIERS = ("onnxslim", "onnxsim")


def _load_meta(model_dir):
    try:
        return read_meta_dict(model_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ExportError(str(e)) from None


def _dim_names(rank, fixed, names):
    """Per-dimension value: a fixed int, or a dim_param name for dynamic ones."""
    return [fixed[i] if fixed is not None and fixed[i] > 0 else names[i] for i in range(rank)]


def _set_shape(value_info, dims):
    shape = value_info.type.tensor_type.shape
    for d, v in zip(shape.dim, dims):
        if isinstance(v, int):
            d.Clear()
            d.dim_value = v
        elif d.dim_value <= 0:  # keep what shape inference fixed, name what stays dynamic
            d.Clear()
            d.dim_param = v


def _rename_io(model, meta):
    """Name the input ``image`` and the outputs as ``infer_cfg.yml`` says, with named dims."""
    graph = model.graph
    out_names = list((meta.get("outputs") or {}).get("names") or ["scores", "boxes"])
    if len(graph.input) != 1:
        raise ExportError(f"expected one graph input, got {[i.name for i in graph.input]}")
    if len(graph.output) != len(out_names):
        raise ExportError(f"graph has {len(graph.output)} outputs, infer_cfg.yml names {out_names}")
    renames = {graph.input[0].name: "image"}
    renames.update({o.name: n for o, n in zip(graph.output, out_names)})
    for node in graph.node:
        node.input[:] = [renames.get(x, x) for x in node.input]
        node.output[:] = [renames.get(x, x) for x in node.output]
    for vi in list(graph.input) + list(graph.output):
        vi.name = renames.get(vi.name, vi.name)
    shape = [int(v) for v in meta.get("input_shape", [-1, 3, -1, -1])]
    _set_shape(graph.input[0], _dim_names(4, shape, ["batch", 3, "height", "width"]))
    for o in graph.output:
        rank = len(o.type.tensor_type.shape.dim)
        _set_shape(o, _dim_names(rank, [shape[0]] + [-1] * (rank - 1),
                                 ["batch", "num_boxes", "dim2", "dim3"][:rank]))


def _embed_meta(model, meta, extra):
    props = {
        "infer_cfg": dumps_meta(meta),
        "label_list": json.dumps(meta.get("label_list") or []),
        "input_shape": json.dumps(meta.get("input_shape")),
        "preprocess": json.dumps(meta.get("Preprocess") or []),
        "pad_stride": str(meta.get("pad_stride") or 0),
        "outputs": json.dumps(meta.get("outputs") or {}),
        **extra,
    }
    del model.metadata_props[:]
    for k, v in props.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v


def read_onnx_metadata(onnx_path):
    """The ``infer_cfg.yml`` dict embedded in ``onnx_path`` (``{}`` when absent)."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return loads_meta(props["infer_cfg"], f"{onnx_path} (metadata_props)") if "infer_cfg" in props else {}


def _dynamic_dims(model):
    return [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim if d.dim_param]


_NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}


def fold_fixed_shape(model, input_shape):
    """Fold everything that does not depend on the input's *values* into initializers.

    With a fully fixed input shape, the shape arithmetic Paddle exports (``Shape`` -> ``Slice``
    -> ``Concat`` -> ``Reshape``/``Range``/``Expand``, anchor grids, ...) is a constant. RKNN's
    converter cannot follow it (it fails on a ``Split`` of a symbolic dim), and its NPU should
    not run it, so we evaluate those subgraphs once with ONNX Runtime and replace the tensors
    they feed into value-dependent nodes with initializers; shape inference then gives every
    tensor a static shape.

    Args:
        model: ``onnx.ModelProto`` whose single input has the shape ``input_shape``.
        input_shape: ``[B, 3, H, W]``, all positive (a single-input graph), or
            ``{input_name: shape}`` for every input of a multi-input graph.

    Returns:
        A new ``ModelProto`` (folded tensors become initializers, dead nodes removed).
    """
    import onnx

    graph = model.graph
    shapes = dict(input_shape) if isinstance(input_shape, dict) else \
        {graph.input[0].name: list(input_shape)}
    if set(shapes) != {i.name for i in graph.input} or \
            any(int(d) <= 0 for shp in shapes.values() for d in shp):
        raise ExportError(f"folding needs every input's fixed shape, got {shapes}")
    static = _shape_only_tensors(graph)
    frontier = _frontier(graph, static)
    if not frontier:
        return model
    values = _evaluate(model, frontier, shapes)
    out = _with_constants(model, static, values)
    for i in out.graph.input:
        for d, v in zip(i.type.tensor_type.shape.dim, shapes[i.name]):
            d.Clear()
            d.dim_value = int(v)
    for o in out.graph.output:  # let shape inference fill in the now-static output dims
        for d in o.type.tensor_type.shape.dim:
            if d.dim_param:
                d.Clear()
    return onnx.shape_inference.infer_shapes(out, strict_mode=True)


def _shape_only_tensors(graph):
    """Tensors that do not depend on the input's values: initializers, ``Shape`` outputs and
    what is computed from those alone (nodes are topologically sorted in a valid graph)."""
    static = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type in _NONDETERMINISTIC:
            continue
        if node.op_type == "Shape" or all((x == "" or x in static) for x in node.input):
            static.update(o for o in node.output if o)
    return static


def _frontier(graph, static):
    """The shape-only tensors that value-dependent nodes (or the graph outputs) read."""
    inits = {i.name for i in graph.initializer}
    frontier = []
    for node in graph.node:
        if node.op_type != "Shape" and all((x == "" or x in static) for x in node.input):
            continue  # a node that itself folds away
        frontier += [x for x in node.input if x in static and x not in inits and x not in frontier]
    frontier += [o.name for o in graph.output if o.name in static and o.name not in frontier]
    return frontier


def _evaluate(model, names, shapes):
    """``{name: value}`` of tensors ``names`` on zero inputs of ``shapes`` (ONNX Runtime,
    optimizations off)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in model.graph.input:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        feeds[i.name] = np.zeros([int(d) for d in shapes[i.name]], dtype)
    return dict(zip(names, sess.run(names, feeds)))


def _with_constants(model, static, values):
    """A copy of ``model`` without the shape-only nodes, ``values`` as initializers and the
    initializers nothing reads any more removed."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    folded = [n for n in g.node if not set(n.output) <= static]  # keep value-dependent nodes
    del g.node[:]
    g.node.extend(folded)
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), name=k) for k, v in values.items())
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    return out


def simplify_onnx(model, tool):
    """Run ``onnxslim`` or ``onnxsim`` on an in-memory model; dynamic axes must survive.

    Raises:
        ExportError: unknown tool, tool not installed, or the pass fixed a dynamic axis.
    """
    if tool not in SIMPLIFIERS:
        raise ExportError(f"simplify must be one of {SIMPLIFIERS}, got {tool!r}")
    before = _dynamic_dims(model)
    try:
        if tool == "onnxslim":
            import onnxslim
            out = onnxslim.slim(model)
        else:
            import onnxsim
            out, ok = onnxsim.simplify(model)
            if not ok:
                raise ExportError("onnxsim could not validate the simplified model")
    except ImportError as e:
        raise ExportError(f"--simplify {tool}: {tool} is not installed in this environment "
                          f"({e}); it is an optional extra (pip install {tool})") from e
    after = _dynamic_dims(out)
    if after != before:
        raise ExportError(f"{tool} changed the dynamic input axes {before} -> {after}")
    return out


def paddle_to_onnx(model_file, params_file, *, opset=DEFAULT_OPSET, input_names=None,
                   output_names=None):
    """paddle2onnx a saved static graph into an in-memory ``ModelProto``; optionally rename
    its inputs/outputs (in graph order)."""
    import onnx
    import paddle2onnx

    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        paddle2onnx.export(model_file, params_file, save_file=raw, opset_version=int(opset),
                           auto_upgrade_opset=False, verbose=False, enable_onnx_checker=True)
        if not os.path.isfile(raw):
            raise ExportError(f"paddle2onnx wrote nothing for {model_file} (see its log above)")
        model = onnx.load(raw)
    graph = model.graph
    renames = {}
    for values, names in ((graph.input, input_names), (graph.output, output_names)):
        if names is None:
            continue
        if len(values) != len(names):
            raise ExportError(f"graph has {[v.name for v in values]}, expected names {names}")
        renames.update({v.name: n for v, n in zip(values, names)})
    for node in graph.node:
        node.input[:] = [renames.get(x, x) for x in node.input]
        node.output[:] = [renames.get(x, x) for x in node.output]
    for vi in list(graph.input) + list(graph.output):
        vi.name = renames.get(vi.name, vi.name)
    return model


def export_onnx(model_dir, *, output_dir=None, opset=DEFAULT_OPSET, simplify=None,
                fold=True, check=True):
    """Convert ``model_dir``'s Paddle graph to ``model.onnx`` with the metadata embedded.

    Args:
        model_dir: Paddle export directory (``model.pdmodel``/``.pdiparams``/``infer_cfg.yml``).
        output_dir: Where to write ``model.onnx``; default ``model_dir``. A different directory
            also gets a copy of ``infer_cfg.yml``, making it a stand-alone ONNX export dir.
        opset: ONNX opset (>= 11; 16 by default, needed for GridSample).
        simplify: ``None``, ``"onnxslim"`` or ``"onnxsim"`` (optional extras).
        fold: When ``infer_cfg.yml`` fixes the whole input shape (``[1, 3, 640, 640]``), fold
            the shape arithmetic into constants (:func:`fold_fixed_shape`; RKNN needs it).
        check: Run ``onnx.checker`` and ONNX shape inference on the result.

    Returns:
        Path of the written ``model.onnx``.
    """
    import onnx
    import paddle2onnx

    meta = _load_meta(model_dir)
    if simplify is not None and simplify not in SIMPLIFIERS:
        raise ExportError(f"simplify must be one of {SIMPLIFIERS}, got {simplify!r}")
    files = [os.path.join(model_dir, f) for f in ("model.pdmodel", "model.pdiparams")]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ExportError(f"missing {missing}: run tools/export_model.py first")
    output_dir = output_dir or model_dir
    os.makedirs(output_dir, exist_ok=True)
    model = paddle_to_onnx(files[0], files[1], opset=opset)
    _rename_io(model, meta)
    shape = [int(v) for v in meta.get("input_shape", [-1, 3, -1, -1])]
    folded = bool(fold) and all(d > 0 for d in shape)
    if folded:
        model = fold_fixed_shape(model, shape)
    if simplify:
        model = simplify_onnx(model, simplify)
    _embed_meta(model, meta, {
        "exporter": f"ppdet_ext.export.onnx_export (paddle2onnx {paddle2onnx.__version__}, "
                    f"opset {int(opset)})",
        "simplified_with": simplify or "",
        "folded_fixed_shape": str(folded),
    })
    if check:
        onnx.checker.check_model(model)
        model = onnx.shape_inference.infer_shapes(model)
    path = os.path.join(output_dir, "model.onnx")
    onnx.save(model, path)
    if os.path.abspath(output_dir) != os.path.abspath(model_dir):
        copy_meta(model_dir, output_dir)
    return path
