"""RKNN (rknn-toolkit2 2.5.0): ONNX -> ``.rknn`` for an RK NPU, and the PC simulator as a backend.

rknn-toolkit2 is an optional extra living in its own venv (``scripts/setup_rknn_env.sh`` ->
``.venv-rknn``): its pins (protobuf<=4.25.4, onnx<=1.18, torch<=2.4.0) clash with the core
stack. Everything that imports ``rknn`` therefore runs in a worker process started with that
venv's python (``python -m deploy.backends.rknn serve``), talking to this process over a
``multiprocessing.connection`` socket; the worker imports only numpy + ``rknn`` (+ this module).

The simulator cannot load a ``.rknn`` file: it runs the model built in the same session, so a
backend builds from ``model.onnx`` when it starts (seconds for fp16; int8 adds calibration).

Build settings (:class:`BuildConfig`):

* ``quant``: ``fp16`` | ``int8`` (w8a8, calibration list) | ``hybrid`` (int8 with some layers
  kept in fp16: the op types in ``float_ops`` — by default ``Softmax``, i.e. DFL and
  attention —, the convs in ``float_layers`` (node or Paddle weight names, e.g. from a
  sensitivity report) and the subgraphs in ``float_spans``; resolved in rknn's own graph after
  ``hybrid_quantization_step1`` and written into its ``custom_quantize_layers``).
* Input: the graph takes the *normalised* ``[1, 3, H, W]`` float tensor the runner feeds
  (``mean_values`` 0, ``std_values`` 1); calibration data is written as ``.npy`` by the same
  ``deploy/preprocess.py`` code. On a board one would fold mean/std into the ``.rknn`` instead.
* RKNN needs a fixed input shape: export with ``--input_shape H W`` (and ``--batch_size 1``).
  A batch ``B > 1`` runs image by image.

The build log's layer table (``ID OpType DataType Target ...``) is rknn-toolkit2's own record of
which layer runs on the NPU and which falls back to the CPU; :func:`parse_op_table` turns it
into the op report.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_VENV = os.path.join(REPO, ".venv-rknn")
QUANT_MODES = ("fp16", "int8", "hybrid")
# DETR-family graphs fail rknn's squeeze fusion rules (../shared/STACK-NOTES.md)
DETR_DISABLE_RULES = ("squeeze_nd_add", "squeeze_nd_mul")


@dataclass
class BuildConfig:
    """What one ONNX -> RKNN build needs (plain data: it crosses the process boundary).

    Attributes:
        onnx: Path of the ONNX graph (fixed input shapes).
        inputs: Graph input names (``["image"]``; the RT-DETR decoder part has three).
        input_shapes: One fixed shape per input (``[[1, 3, H, W]]``).
        quant: ``fp16`` | ``int8`` | ``hybrid``.
        target: RKNN platform (``rk3588``).
        dataset: Calibration list (one ``.npy`` path a line), needed for int8/hybrid.
        float_ops: ``hybrid``: ONNX op types kept in fp16 (each node's input->output span).
        float_layers: ``hybrid``: Conv layers kept in fp16, by node or weight name.
        float_spans: ``hybrid``: ``[input tensor, output tensor]`` spans kept in fp16 (e.g. a
            whole backbone stage ``["image", "..."]``). Both are resolved against rknn's own
            graph after step 1 and written into its cfg (:func:`float_tensors`).
        disable_rules: rknn graph-optimizer rules to switch off.
        quantized_algorithm: ``normal`` | ``mmse`` | ``kl_divergence``.
        export_path: Write the ``.rknn`` here (``None``: do not export).
        work_dir: Scratch dir for hybrid step files.
    """

    onnx: str
    inputs: List[str]
    input_shapes: List[List[int]]
    quant: str = "fp16"
    target: str = "rk3588"
    dataset: Optional[str] = None
    float_ops: List[str] = field(default_factory=lambda: ["Softmax"])
    float_layers: List[str] = field(default_factory=list)
    float_spans: List[List[str]] = field(default_factory=list)
    disable_rules: List[str] = field(default_factory=list)
    quantized_algorithm: str = "normal"
    export_path: Optional[str] = None
    work_dir: Optional[str] = None


# -- environment ----------------------------------------------------------------------------
def rknn_python() -> Optional[str]:
    """The python that has rknn-toolkit2: ``$RKNN_PYTHON``, else ``.venv-rknn``, else None."""
    env = os.environ.get("RKNN_PYTHON")
    if env:
        return env if os.path.isfile(env) else None
    py = os.path.join(DEFAULT_VENV, "bin", "python")
    if os.path.isfile(py) and glob.glob(os.path.join(DEFAULT_VENV, "lib", "python*",
                                                     "site-packages", "rknn", "api")):
        return py
    return None


def unavailable_reason() -> Optional[str]:
    """``None`` when the rknn worker can start, else why not (for skips and format checks)."""
    if rknn_python() is None:
        return ("rknn-toolkit2 is not installed: it is an optional extra in its own venv; run "
                "`bash scripts/setup_rknn_env.sh` (creates .venv-rknn, ~5.6 GB) or set RKNN_PYTHON")
    return None


# -- calibration list -------------------------------------------------------------------------
def write_calibration_list(meta, image_dir: str, out_dir: str, *, num: int = 100,
                           seed: int = 0) -> str:
    """Preprocess ``num`` images of ``image_dir`` exactly as the runner does, as ``.npy``.

    Args:
        meta: :class:`deploy.meta.ExportMeta` with a fixed input shape.
        image_dir: A COCO image folder (use one disjoint from the evaluation set).
        out_dir: Where the ``.npy`` files and ``dataset.txt`` go.
        num: Images to use (a seeded random choice, sorted by name first).

    Returns:
        Path of ``dataset.txt`` (one ``.npy`` ``[1, 3, H, W]`` float32 path a line).
    """
    from deploy.preprocess import Preprocessor, preprocess_path

    if meta.fixed_hw is None:
        raise ValueError("calibration needs a fixed input shape (export with --input_shape H W)")
    files = sorted(f for f in os.listdir(image_dir) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    if not files:
        raise FileNotFoundError(f"no images in {image_dir}")
    pick = np.random.RandomState(seed).permutation(len(files))[:num]
    pre = Preprocessor(meta.preprocess)
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    for i in sorted(pick):
        x = preprocess_path(meta, os.path.join(image_dir, files[i]), pre)
        path = os.path.join(os.path.abspath(out_dir), os.path.splitext(files[i])[0] + ".npy")
        np.save(path, x)
        lines.append(path)
    txt = os.path.join(out_dir, "dataset.txt")
    with open(txt, "w") as f:
        f.write("\n".join(lines) + "\n")
    return txt


def constant_outputs(cfg: "BuildConfig", log_text: str):
    """``(num_outputs, {index: array})`` for the outputs rknn-toolkit2 removed as constants.

    rknn folds an output that does not depend on the input into a constant and drops it from
    the model (its log: "These outputs [...] of model are constants, remove it"); e.g. a
    freshly initialised RT-DETR's ``enc_coord`` (zero-initialised box head + anchors). Their
    value is input-independent, so ONNX Runtime computes it once here and the backend puts it
    back in place, keeping the output list of the ONNX graph.
    """
    import onnx

    outs = [o.name for o in onnx.load(cfg.onnx, load_external_data=False).graph.output]
    m = re.search(r"These outputs \[([^\]]*)\] of model are constants", log_text)
    dropped = [n.strip().strip("'\"") for n in m.group(1).split(",")] if m else []
    if not dropped:
        return len(outs), {}
    import onnxruntime as ort

    sess = ort.InferenceSession(cfg.onnx, providers=["CPUExecutionProvider"])
    feeds = {n: np.zeros(s, np.float32) for n, s in zip(cfg.inputs, cfg.input_shapes)}
    values = dict(zip(dropped, sess.run(dropped, feeds)))
    return len(outs), {outs.index(n): values[n] for n in dropped}


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
    consumers: Dict[str, List[Any]] = {}
    producer: Dict[str, Any] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
        for o in n.output:
            producer[o] = n
    convs: Dict[str, Any] = {}
    for n in g.node:
        if n.op_type == "Conv":
            convs[n.name] = n
            if len(n.input) > 1:
                convs.setdefault(n.input[1], n)
    missing = [k for k in layers if k not in convs]
    if missing:
        raise ValueError(f"{graph_path}: no Conv node or conv weight named {missing}")
    out: List[str] = []

    def mark(t):
        if t not in out:
            out.append(t)

    for k in layers:
        src = convs[k].input[0]
        if src in producer and not producer[src].op_type.startswith("exDataConvert"):
            mark(src)  # rknn quantizes a tensor where it is produced: the conv reads it in fp16
        t = convs[k].output[0]
        mark(t)
        while len(consumers.get(t, [])) == 1 and consumers[t][0].op_type in _CONV_TAIL:
            t = consumers[t][0].output[0]
            mark(t)
    names = set(node_names)
    for n in g.node:
        if n.name in names or any(n.op_type == t or n.op_type.startswith("ex" + t)
                                  for t in op_types):
            for o in n.output:
                mark(o)
    known = set(producer) | {i.name for i in g.input}
    for src, dst in spans:
        bad = [t for t in (src, dst) if t not in known]
        if bad:
            raise ValueError(f"{graph_path}: no tensor named {bad} (open it in netron for names)")
        down, stack = set(), [src]
        while stack:  # tensors downstream of src
            t = stack.pop()
            for n in consumers.get(t, []):
                for o in n.output:
                    if o not in down:
                        down.add(o)
                        stack.append(o)
        up, stack = set(), [dst]
        while stack:  # tensors upstream of dst
            t = stack.pop()
            if t in up or t not in producer:
                continue
            up.add(t)
            stack.extend(producer[t].input)
        for n in g.node:  # graph order; rknn's own input cast (exDataConvert) left alone
            if n.op_type.startswith("exDataConvert"):
                continue
            for o in n.output:
                if o in down and o in up:
                    mark(o)
    return out


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
_ROW = re.compile(r"^D RKNN: \[[^\]]*\]\s+(\d+)\s+(\S+)\s+(\S+)\s+(NPU|CPU)\s+(.*)$")


def parse_op_table(log_text: str) -> List[Dict[str, Any]]:
    """Rows of rknn-toolkit2's layer table: ``id``, ``op``, ``dtype``, ``target``, ``name``."""
    rows, on = [], False
    for line in log_text.splitlines():
        if re.search(r"\bID\s+OpType\s+DataType\s+Target\b", line):
            rows, on = [], True  # keep the last table of the log
            continue
        if on:
            m = _ROW.match(line.rstrip())
            if m:
                rows.append({"id": int(m.group(1)), "op": m.group(2), "dtype": m.group(3),
                             "target": m.group(4), "name": m.group(5).split()[-1]})
            elif rows and "----" not in line:
                on = False
    return rows


def summarize_ops(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Counts per target and op type; the CPU fallbacks by name (I/O operators left out)."""
    io = {"InputOperator", "OutputOperator"}
    body = [r for r in rows if r["op"] not in io]
    by = Counter((r["target"], r["op"]) for r in body)
    return {
        "layers": len(body),
        "npu_layers": sum(r["target"] == "NPU" for r in body),
        "cpu_layers": sum(r["target"] == "CPU" for r in body),
        "npu_ops": dict(sorted((op, n) for (t, op), n in by.items() if t == "NPU")),
        "cpu_ops": dict(sorted((op, n) for (t, op), n in by.items() if t == "CPU")),
        "cpu_fallbacks": [f'{r["op"]} ({r["name"]})' for r in body if r["target"] == "CPU"],
        "dtypes": dict(Counter(r["dtype"] for r in body)),
        # hybrid builds add exDataConvert layers at each int8 <-> fp16 boundary
        "data_converts": sum(r["op"] == "exDataConvert" for r in body),
        "dtypes_compute": dict(Counter(r["dtype"] for r in body if r["op"] != "exDataConvert")),
    }


def op_report_markdown(summary: Dict[str, Any], title: str, command: str = "") -> str:
    lines = [f"# RKNN op report: {title}", ""]
    if command:
        lines += ["Built with:", "", "```", command, "```", ""]
    lines += [f"Layers: {summary['layers']} — NPU {summary['npu_layers']}, "
              f"CPU {summary['cpu_layers']} (from rknn-toolkit2's build-log layer table; "
              "input/output operators not counted). Data types: "
              + ", ".join(f"{k} {v}" for k, v in summary["dtypes"].items())
              + ("" if not summary.get("data_converts") else
                 f"; without the {summary['data_converts']} exDataConvert (int8 <-> fp16) "
                 "layers: " + ", ".join(f"{k} {v}" for k, v in
                                       summary["dtypes_compute"].items())), "",
              "| op | NPU | CPU |", "|---|---|---|"]
    ops = sorted(set(summary["npu_ops"]) | set(summary["cpu_ops"]))
    lines += [f"| {op} | {summary['npu_ops'].get(op, 0)} | {summary['cpu_ops'].get(op, 0)} |"
              for op in ops]
    lines += ["", "CPU fallbacks: " + (", ".join(summary["cpu_fallbacks"]) or "none"), ""]
    return "\n".join(lines)


# -- worker side (runs under the rknn venv) ----------------------------------------------------
def _build(cfg: BuildConfig):
    from rknn.api import RKNN

    if cfg.quant not in QUANT_MODES:
        raise ValueError(f"quant must be one of {QUANT_MODES}, got {cfg.quant!r}")
    if cfg.quant != "fp16" and not cfg.dataset:
        raise ValueError(f"quant={cfg.quant} needs a calibration list (dataset)")
    kw = {"disable_rules": list(cfg.disable_rules)} if cfg.disable_rules else {}

    def fresh():
        r = RKNN(verbose=True)
        # no mean/std: inputs arrive normalised, exactly as the runner feeds the other backends
        r.config(target_platform=cfg.target, quantized_algorithm=cfg.quantized_algorithm, **kw)
        return r

    rk = fresh()
    if rk.load_onnx(cfg.onnx, inputs=list(cfg.inputs),
                    input_size_list=[list(s) for s in cfg.input_shapes]) != 0:
        raise RuntimeError(f"rknn load_onnx failed for {cfg.onnx} (see the log)")
    if cfg.quant == "hybrid":
        work = cfg.work_dir or tempfile.mkdtemp(prefix="rknn_hybrid_")
        os.makedirs(work, exist_ok=True)
        cwd = os.getcwd()
        os.chdir(work)  # step 1 writes <name>.model/.data/.quantization.cfg into the cwd
        try:
            # no custom_hybrid spans here: rknn checks them against its own optimised graph,
            # where many ONNX tensors no longer exist (fused BN, channel-shuffle reshapes,
            # DFL reshapes); the fp16 layers are resolved in that graph (<stem>.model) and
            # written into the step-1 cfg instead, which is what step 2 reads
            if rk.hybrid_quantization_step1(dataset=cfg.dataset) != 0:
                raise RuntimeError("rknn hybrid_quantization_step1 failed (see the log)")
            stem = os.path.splitext(os.path.basename(cfg.onnx))[0]
            marked = resolve_float_layers(f"{stem}.model", cfg.onnx, cfg.float_layers,
                                          cfg.float_spans, cfg.float_ops)
            n = mark_float16(f"{stem}.quantization.cfg", marked)
            print(f"hybrid: {len(marked)} layers requested in float16; cfg float16 layers: {n}: "
                  f"{marked}", flush=True)
            rk.release()
            rk = fresh()  # step 2 refuses an object that already loaded a model
            ret = rk.hybrid_quantization_step2(model_input=f"{stem}.model", data_input=f"{stem}.data",
                                               model_quantization_cfg=f"{stem}.quantization.cfg")
        finally:
            os.chdir(cwd)
        if ret != 0:
            raise RuntimeError("rknn hybrid_quantization_step2 failed (see the log)")
    elif rk.build(do_quantization=cfg.quant == "int8", dataset=cfg.dataset) != 0:
        raise RuntimeError("rknn build failed (see the log)")
    if cfg.export_path and rk.export_rknn(cfg.export_path) != 0:
        raise RuntimeError(f"rknn export_rknn({cfg.export_path}) failed")
    return rk


def _serve(address: str, runtime: bool) -> int:
    from multiprocessing.connection import Client

    conn = Client(address, family="AF_UNIX", authkey=bytes.fromhex(os.environ["RKNN_WORKER_KEY"]))
    rk = None
    try:
        cfg = BuildConfig(**conn.recv())
        t = time.perf_counter()
        rk = _build(cfg)
        if runtime and rk.init_runtime(target=None) != 0:  # target None = PC simulator
            raise RuntimeError("rknn init_runtime(simulator) failed")
        from importlib.metadata import version
        sys.stdout.flush()
        conn.send(("ready", {"build_s": time.perf_counter() - t,
                             "toolkit": f"rknn-toolkit2 {version('rknn-toolkit2')}"}))
        while runtime:
            cmd, arg = conn.recv()
            if cmd == "close":
                break
            xs = [np.ascontiguousarray(a, np.float32) for a in arg]
            # 4-D inputs are NCHW like the ONNX graph; rknn ignores the format of other ranks
            fmt = ["nchw"] * len(xs)
            outs = rk.inference(inputs=xs, data_format=fmt if len(xs) > 1 else fmt[0])
            conn.send(("ok", [np.asarray(o, np.float32) for o in outs]))
        return 0
    except Exception:  # noqa: BLE001  (sent to the parent, which raises it)
        conn.send(("error", traceback.format_exc()))
        return 1
    finally:
        sys.stdout.flush()
        if rk is not None:
            rk.release()
        conn.close()


# -- caller side ----------------------------------------------------------------------------
class RknnWorker:
    """A worker process under the rknn venv that builds one model (and optionally serves it).

    Args:
        cfg: The build.
        log_path: The worker's stdout/stderr (rknn's log, with the layer table).
        runtime: Keep the simulator running for :meth:`infer` after the build.
        timeout: Seconds allowed for the build.
    """

    def __init__(self, cfg: BuildConfig, log_path: str, *, runtime: bool = True,
                 timeout: float = 3600.0):
        from multiprocessing.connection import Listener

        py = rknn_python()
        if py is None:
            raise RuntimeError(unavailable_reason())
        self.log_path = log_path
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        key = secrets.token_bytes(16)
        sock_dir = tempfile.mkdtemp(prefix="rknn_")
        address = os.path.join(sock_dir, "worker.sock")
        self._listener = Listener(address, family="AF_UNIX", authkey=key)
        env = dict(os.environ, RKNN_WORKER_KEY=key.hex(),
                   PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [py, "-m", "deploy.backends.rknn", "serve", address] + ([] if runtime else ["--no-runtime"]),
            # cwd: rknn writes files there (e.g. constant outputs as .npy); keep them by the log
            cwd=os.path.dirname(os.path.abspath(log_path)), env=env, stdout=self._log,
            stderr=subprocess.STDOUT)
        self.conn = self._accept(timeout=300)
        self.conn.send(dataclasses.asdict(cfg))
        if not self.conn.poll(timeout):
            self.proc.kill()
            raise TimeoutError(f"rknn build took over {timeout:.0f}s; log: {log_path}")
        status, info = self._recv()
        self.info = info
        with open(log_path, errors="replace") as f:
            self._num_outputs, self._constants = constant_outputs(cfg, f.read())

    def _accept(self, timeout: float):
        """Wait for the worker to connect; fail fast if it dies first."""
        box: Dict[str, Any] = {}
        th = threading.Thread(target=lambda: box.update(conn=self._listener.accept()), daemon=True)
        th.start()
        t0 = time.monotonic()
        while th.is_alive():
            th.join(0.5)
            if th.is_alive() and (self.proc.poll() is not None or time.monotonic() - t0 > timeout):
                self.proc.kill()
                raise RuntimeError(f"rknn worker did not start; log: {self.log_path}")
        return box["conn"]

    def _recv(self):
        try:
            status, payload = self.conn.recv()
        except EOFError as e:
            raise RuntimeError(f"rknn worker exited (code {self.proc.wait()}); log: "
                               f"{self.log_path}") from e
        if status == "error":
            raise RuntimeError(f"rknn worker failed; log: {self.log_path}\n{payload}")
        return status, payload

    def infer(self, *xs: np.ndarray) -> List[np.ndarray]:
        """Run the built model on one input per graph input (each with batch 1)."""
        self.conn.send(("infer", list(xs)))
        outs = list(self._recv()[1])
        if len(outs) + len(self._constants) == self._num_outputs:  # rknn dropped constants
            for k in sorted(self._constants):
                outs.insert(k, self._constants[k].astype(np.float32))
        return outs

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.conn.send(("close", None))
            except OSError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._listener.close()
        self._log.close()

    def op_report(self) -> Dict[str, Any]:
        with open(self.log_path, errors="replace") as f:
            return summarize_ops(parse_op_table(f.read()))


def build_rknn(cfg: BuildConfig, log_path: str, *, timeout: float = 3600.0) -> Dict[str, Any]:
    """Build (and export) without a runtime; returns ``{"info":..., "ops": summary}``."""
    w = RknnWorker(cfg, log_path, runtime=False, timeout=timeout)
    try:
        return {"info": w.info, "ops": w.op_report()}
    finally:
        w.close()


# -- RT-DETR NPU/CPU split (ppdet_ext/export/rknn_split.py writes the graphs) -------------------
def split_config(model_dir: str) -> Optional[Dict[str, Any]]:
    """The ``rknn_split`` block of ``infer_cfg.yml`` (``None`` for a single-graph export)."""
    import yaml

    with open(os.path.join(model_dir, "infer_cfg.yml")) as f:
        return (yaml.safe_load(f) or {}).get("rknn_split")


def select_queries(enc_score: np.ndarray, out_memory: np.ndarray, enc_coord: np.ndarray,
                   k: int):
    """The query selection that runs on the CPU: top-``k`` tokens by score, their rows.

    Args:
        enc_score: ``[B, L, C]`` class logits per encoder token (the encoder graph's
            ``enc_logits``; the max over classes is taken here, RKNN would run its ReduceMax
            on the CPU anyway), or ``[B, L]`` best class logit (``enc_score`` of older exports).
        out_memory: ``[B, L, D]``; enc_coord: ``[B, L, 4]`` cxcywh logits.

    Returns:
        ``target [B, k, D]``, ``ref_unact [B, k, 4]`` in descending score order.
    """
    if enc_score.ndim == 3:
        enc_score = enc_score.max(-1)
    idx = np.argsort(-enc_score, axis=1, kind="stable")[:, :k]
    take = lambda a: np.take_along_axis(a, idx[..., None], axis=1)  # noqa: E731
    return take(out_memory), take(enc_coord)


class SplitPipeline:
    """encoder graph -> numpy top-k -> decoder graph: dense ``[scores, boxes]``.

    Args:
        run_encoder: ``image [1, 3, H, W] -> [enc_logits, out_memory, enc_coord, memory]``.
        run_decoder: ``(target, ref_unact, memory) -> [scores, boxes]``.
        num_queries: ``K``.
        channels_first: the encoder writes ``[1, X, L]`` (``encoder_layout: channels_first``
            in ``rknn_split``); ``memory`` then goes to the decoder as it is.
    """

    def __init__(self, run_encoder, run_decoder, num_queries: int, channels_first: bool = False):
        self.run_encoder, self.run_decoder, self.k = run_encoder, run_decoder, int(num_queries)
        self.channels_first = bool(channels_first)

    @classmethod
    def from_config(cls, cfg: Dict[str, Any], run_encoder, run_decoder) -> "SplitPipeline":
        """From the ``rknn_split`` block of ``infer_cfg.yml``."""
        return cls(run_encoder, run_decoder, cfg["num_queries"],
                   cfg.get("encoder_layout") == "channels_first")

    def __call__(self, image: np.ndarray) -> List[np.ndarray]:
        outs = []
        for i in range(image.shape[0]):
            enc_logits, out_memory, enc_coord, memory = self.run_encoder(image[i:i + 1])
            if self.channels_first:  # [1, X, L] -> [1, L, X] (views; only K rows are copied)
                enc_logits, out_memory, enc_coord = (np.swapaxes(a, 1, 2) for a in
                                                     (enc_logits, out_memory, enc_coord))
            target, ref = select_queries(enc_logits, out_memory, enc_coord, self.k)
            outs.append(self.run_decoder(target, ref, memory))
        return [np.concatenate(o, axis=0) for o in zip(*outs)]


def onnxruntime_split_pipeline(model_dir: str, threads: int = 1) -> SplitPipeline:
    """The same split on ONNX Runtime (CPU): checks the split without rknn-toolkit2."""
    import onnxruntime as ort

    cfg = split_config(model_dir)
    if cfg is None:
        raise ValueError(f"{model_dir}: infer_cfg.yml has no rknn_split block")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    enc = ort.InferenceSession(os.path.join(model_dir, cfg["encoder"]), so,
                               providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(model_dir, cfg["decoder"]), so,
                               providers=["CPUExecutionProvider"])
    names = list(cfg["decoder_inputs"])
    return SplitPipeline.from_config(
        cfg, lambda x: enc.run(list(cfg["encoder_outputs"]), {"image": x}),
        lambda *xs: dec.run(["scores", "boxes"], dict(zip(names, xs))))


from deploy.backends.base import Backend  # noqa: E402  (after the worker-only code)


class RknnSimBackend(Backend):
    """rknn-toolkit2's PC simulator over ``model.onnx`` (rebuilt at start; see module doc).

    Args:
        meta: Export metadata; the input H and W must be fixed.
        quant: ``fp16`` | ``int8`` | ``hybrid``.
        target: RKNN platform.
        calib: int8/hybrid: a ``dataset.txt`` of ``.npy`` inputs, or a folder of images to
            build one from (:func:`write_calibration_list`).
        calib_images: Images taken from a ``calib`` folder.
        float_ops: ``hybrid``: ONNX op types kept in fp16.
        float_layers: ``hybrid``: Conv layers kept in fp16, by node or weight name
            (:func:`float_tensors`).
        float_spans: ``hybrid``: more ``[input, output]`` tensor spans kept in fp16.
        disable_rules: rknn optimizer rules to turn off (DETR graphs: squeeze_nd_add/mul).
        log_dir: Where the build log and op report go (default: a temp dir).
        quant_algorithm: rknn ``quantized_algorithm``: ``normal`` | ``kl_divergence`` | ``mmse``.
        export_path: Also write the built ``.rknn`` here (what a board loads).
    """

    def __init__(self, meta, *, quant: str = "fp16", target: str = "rk3588",
                 calib: Optional[str] = None, calib_images: int = 100,
                 float_ops: Sequence[str] = ("Softmax",), float_layers: Sequence[str] = (),
                 float_spans: Sequence[Sequence[str]] = (), disable_rules: Sequence[str] = (),
                 quant_algorithm: str = "normal", log_dir: Optional[str] = None,
                 export_path: Optional[str] = None):
        super().__init__(meta)
        hw = meta.fixed_hw
        if hw is None:
            raise ValueError("RKNN needs a fixed input shape: export with --input_shape H W "
                             "--batch_size 1 (infer_cfg.yml input_shape has -1)")
        if quant not in QUANT_MODES:
            raise ValueError(f"quant must be one of {QUANT_MODES}, got {quant!r}")
        # absolute: the worker runs with its cwd in log_dir (hybrid step files go to work_dir)
        self.log_dir = os.path.abspath(log_dir or tempfile.mkdtemp(prefix="rknn_sim_"))
        dataset = None
        if quant != "fp16":
            if not calib:
                raise ValueError(f"rknn quant={quant} needs calib=<dataset.txt or image folder>")
            dataset = os.path.abspath(calib if os.path.isfile(calib) else write_calibration_list(
                meta, calib, os.path.join(self.log_dir, "calib"), num=int(calib_images)))
        self.quant, self.target = quant, target
        common = dict(target=target, float_ops=list(float_ops), disable_rules=list(disable_rules),
                      quantized_algorithm=quant_algorithm)
        if (float_layers or float_spans) and quant != "hybrid":
            raise ValueError("float_layers / float_spans need quant='hybrid'")
        common.update(float_layers=list(float_layers), float_spans=[list(s) for s in float_spans])
        export_path = os.path.abspath(export_path) if export_path else None
        self.split = split_config(meta.model_dir)
        self.workers: Dict[str, RknnWorker] = {}
        if self.split is None:
            cfg = BuildConfig(onnx=os.path.abspath(meta.file("model.onnx")), inputs=["image"],
                              input_shapes=[[1, 3, hw[0], hw[1]]], quant=quant, dataset=dataset,
                              work_dir=os.path.join(self.log_dir, "hybrid"),
                              export_path=export_path, **common)
            self.workers["model"] = RknnWorker(cfg, os.path.join(self.log_dir, f"build_{quant}.log"))
            self._run = lambda x: self._per_image(self.workers["model"], x)
        else:
            if float_layers or float_spans:
                raise ValueError("float_layers / float_spans are not supported for split graphs")
            # RT-DETR split: quant applies to the encoder graph (backbone + hybrid encoder); the
            # decoder graph (attention, softmax, box refinement) stays fp16 on the NPU.
            stem = export_path[:-len(".rknn")] if export_path and export_path.endswith(".rknn") \
                else export_path
            enc = BuildConfig(onnx=os.path.abspath(meta.file(self.split["encoder"])), inputs=["image"],
                              input_shapes=[[1, 3, hw[0], hw[1]]], quant=quant, dataset=dataset,
                              work_dir=os.path.join(self.log_dir, "hybrid_encoder"),
                              export_path=f"{stem}_encoder.rknn" if stem else None, **common)
            dec = BuildConfig(onnx=os.path.abspath(meta.file(self.split["decoder"])),
                              inputs=list(self.split["decoder_inputs"]),
                              input_shapes=[list(s) for s in self.split["decoder_input_shapes"]],
                              quant="fp16", export_path=f"{stem}_decoder.rknn" if stem else None,
                              **common)
            self.workers["encoder"] = RknnWorker(
                enc, os.path.join(self.log_dir, f"build_encoder_{quant}.log"))
            self.workers["decoder"] = RknnWorker(
                dec, os.path.join(self.log_dir, "build_decoder_fp16.log"))
            self._run = SplitPipeline.from_config(self.split, self.workers["encoder"].infer,
                                                  self.workers["decoder"].infer)
        self.op_reports = {name: w.op_report() for name, w in self.workers.items()}
        self.ops = _merge_reports(list(self.op_reports.values()))

    @staticmethod
    def _per_image(worker: "RknnWorker", image: np.ndarray) -> List[np.ndarray]:
        per = [worker.infer(image[i:i + 1]) for i in range(image.shape[0])]
        return [np.concatenate(p, axis=0) for p in zip(*per)]

    def infer(self, image: np.ndarray) -> List[np.ndarray]:
        return self._run(image)

    def describe(self) -> Dict[str, Any]:
        w = next(iter(self.workers.values()))
        return {"engine": w.info.get("toolkit", "rknn-toolkit2"), "mode": "simulator",
                "target": self.target, "quant": self.quant, "graphs": list(self.workers),
                "npu_layers": self.ops["npu_layers"], "cpu_layers": self.ops["cpu_layers"]}

    def close(self) -> None:
        for w in self.workers.values():
            w.close()


def _merge_reports(reports: List[Dict[str, Any]]) -> Dict[str, Any]:
    if len(reports) == 1:
        return reports[0]
    out: Dict[str, Any] = {"layers": 0, "npu_layers": 0, "cpu_layers": 0, "npu_ops": Counter(),
                           "cpu_ops": Counter(), "cpu_fallbacks": [], "dtypes": Counter(),
                           "data_converts": 0, "dtypes_compute": Counter()}
    for r in reports:
        for k in ("layers", "npu_layers", "cpu_layers", "data_converts"):
            out[k] += r.get(k, 0)
        for k in ("npu_ops", "cpu_ops", "dtypes", "dtypes_compute"):
            out[k].update(r.get(k, {}))
        out["cpu_fallbacks"] += r["cpu_fallbacks"]
    for k in ("npu_ops", "cpu_ops", "dtypes", "dtypes_compute"):
        out[k] = dict(sorted(out[k].items()))
    return out


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(description="rknn worker (started by RknnWorker; not a user CLI)")
    p.add_argument("cmd", choices=["serve"])
    p.add_argument("address")
    p.add_argument("--no-runtime", action="store_true")
    a = p.parse_args(argv)
    return _serve(a.address, runtime=not a.no_runtime)


if __name__ == "__main__":
    sys.exit(_main())
