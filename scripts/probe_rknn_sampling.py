"""Which discrete-sampling formulation does rknn-toolkit2 2.5.0 (rk3588, fp16) put on the NPU?

Small hand-built ONNX graphs of one RT-DETRv2-tiny level-0 read at 640 px (4 heads, 80x80 map,
32 channels per head, 100 queries x 4 points), each built for rk3588 fp16 and run on the PC
simulator. For each probe: NPU/CPU layers from rknn's layer table, and the simulator's result
against ONNX Runtime and against the same formula evaluated on fp16-rounded locations (the NPU
computes the locations in fp16, so that is the exact target). Writes
docs/results/onnx_rknn/probe_rknn_sampling.json.

Run under the rknn venv (it imports rknn):

    PYTHONPATH=. .venv-rknn/bin/python scripts/probe_rknn_sampling.py
"""
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

from ppdet_ext_deploy.rknn.report import parse_op_table, summarize_ops

N, H, W, C, Q, P = 4, 80, 80, 32, 100, 4
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "docs", "results", "onnx_rknn")


class Graph:
    """Tiny ONNX builder: ``op(type, inputs, **attrs)`` returns the output name."""

    def __init__(self):
        self.nodes, self.inits, self.k = [], [], 0

    def c(self, value, dtype=np.float32):
        self.k += 1
        self.inits.append(nh.from_array(np.asarray(value, dtype), f"c{self.k}"))
        return f"c{self.k}"

    def op(self, kind, inputs, **attrs):
        self.k += 1
        out = f"{kind.lower()}_{self.k}"
        self.nodes.append(oh.make_node(kind, inputs, [out], name=f"{kind}.{self.k}", **attrs))
        return out

    def model(self, inputs, out, shape):
        g = oh.make_graph(self.nodes, "probe", [oh.make_tensor_value_info(n, t, s)
                                                for n, t, s in inputs],
                          [oh.make_tensor_value_info(out, TP.FLOAT, shape)], self.inits)
        m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 16)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def _xy(g):
    """loc [N, Q*P, 2] -> (x*W, y*H) as [N, Q*P, 1] each."""
    i64 = lambda v: g.c([v], np.int64)  # noqa: E731
    lx = g.op("Slice", ["loc", i64(0), i64(1), i64(2)])
    ly = g.op("Slice", ["loc", i64(1), i64(2), i64(2)])
    return g.op("Mul", [lx, g.c(W)]), g.op("Mul", [ly, g.c(H)])


def _clip(g, v, hi):
    return g.op("Clip", [v, g.c(0.0), g.c(float(hi))])


def _gather_rows(g, flat):
    return g.op("Gather", ["value", g.op("Reshape", [flat, g.c([-1], np.int64)])], axis=0)


def gather_probe(kind):
    """1-D Gather over the flattened [N*H*W, C] table; ``kind`` picks the index arithmetic."""
    g = Graph()
    vx, vy = _xy(g)
    base = (np.arange(N) * H * W).reshape(N, 1, 1)
    if kind == "floor_int64":      # what the previous export did: Floor -> Cast -> int64 math
        x, y = (g.op("Cast", [_clip(g, g.op("Cast", [g.op("Cast", [g.op("Floor", [v])],
                                                                 to=TP.INT64)], to=TP.FLOAT), s - 1)],
                     to=TP.INT64) for v, s in ((vx, W), (vy, H)))
        flat = g.op("Add", [g.op("Add", [g.op("Mul", [y, g.c(W, np.int64)]), x]),
                            g.c(base, np.int64)])
    elif kind in ("trunc_int32", "trunc_int64"):  # clip in float, Cast truncates (= floor, >= 0)
        t, dt = (TP.INT32, np.int32) if kind.endswith("32") else (TP.INT64, np.int64)
        x, y = (g.op("Cast", [_clip(g, v, s - 1)], to=t) for v, s in ((vx, W), (vy, H)))
        flat = g.op("Add", [g.op("Add", [g.op("Mul", [y, g.c(W, dt)]), x]), g.c(base, dt)])
    elif kind == "float_index_one_cast":  # all index math in float, one Cast right before Gather
        x, y = (g.op("Floor", [_clip(g, v, s - 1)]) for v, s in ((vx, W), (vy, H)))
        flat = g.op("Add", [g.op("Add", [g.op("Mul", [y, g.c(W)]), x]), g.c(base)])
        flat = g.op("Cast", [flat], to=TP.INT32)
    else:
        raise KeyError(kind)
    return g, _gather_rows(g, flat), [N * Q * P, C]


def onehot(g, v, size):
    """[.., 1] location in pixels -> one-hot over ``size`` bins (the exported formulation)."""
    t = g.op("Sub", [_clip(g, v, size - 1), g.c(np.arange(size + 1).reshape(1, 1, 1, -1))])
    ramp = g.op("Clip", [g.op("Mul", [t, g.c(4096.0)]), g.c(-1.0), g.c(1.0)])
    step = g.op("Clip", [g.op("Add", [g.op("Mul", [ramp, g.c(4096.0)]), g.c(1.0)]),
                         g.c(0.0), g.c(1.0)])
    i64 = lambda v: g.c([v], np.int64)  # noqa: E731
    return g.op("Sub", [g.op("Slice", [step, i64(0), i64(size), i64(3)]),
                        g.op("Slice", [step, i64(1), i64(size + 1), i64(3)])])


def onehot_probe(qpad):
    """Gather-free read: A = (w * onehot_y)^T onehot_x per query, out = value @ A^T."""
    g = Graph()
    loc = g.op("Reshape", ["loc", g.c([N, Q, P, 2], np.int64)])
    i64 = lambda v: g.c([v], np.int64)  # noqa: E731
    vx = g.op("Mul", [g.op("Slice", [loc, i64(0), i64(1), i64(3)]), g.c(W)])
    vy = g.op("Mul", [g.op("Slice", [loc, i64(1), i64(2), i64(3)]), g.c(H)])
    ox, oy = onehot(g, vx, W), onehot(g, vy, H)                         # [N, Q, P, W|H]
    oyw = g.op("Mul", [oy, g.op("Unsqueeze", ["w", i64(3)])])
    a = g.op("MatMul", [g.op("Transpose", [oyw], perm=[0, 1, 3, 2]), ox])   # [N, Q, H, W]
    a = g.op("Reshape", [a, g.c([N, Q, H * W], np.int64)])
    q = Q
    if qpad:
        q = Q + (-Q % 8)
        a = g.op("Concat", [a, g.c(np.zeros((N, q - Q, H * W)))], axis=1)
    value = g.op("Transpose", [g.op("Reshape", ["value", g.c([N, H * W, C], np.int64)])],
                 perm=[0, 2, 1])                                         # [N, C, H*W]
    out = g.op("MatMul", [value, g.op("Transpose", [a], perm=[0, 2, 1])])  # [N, C, q]
    if qpad:
        out = g.op("Slice", [out, i64(0), i64(Q), i64(2)])
    out = g.op("Reshape", [g.op("Transpose", [out], perm=[0, 2, 1]), g.c([N * Q, C], np.int64)])
    return g, out, [N * Q, C]


def reference(value, loc, wts, half):
    """numpy: value [N*H*W, C], loc [N, Q*P, 2] -> per point [N*Q*P, C] (or weighted)."""
    if half:
        loc = loc.astype(np.float16)
        vx = (loc[..., 0] * np.float16(W)).astype(np.float32)
        vy = (loc[..., 1] * np.float16(H)).astype(np.float32)
    else:
        vx, vy = loc[..., 0] * np.float32(W), loc[..., 1] * np.float32(H)
    x = np.clip(np.floor(vx), 0, W - 1).astype(int)
    y = np.clip(np.floor(vy), 0, H - 1).astype(int)
    picked = value[(np.arange(N)[:, None] * H * W + y * W + x).reshape(-1)]
    if wts is None:
        return picked
    return (picked.reshape(N, Q, P, C) * wts[..., None]).sum(2).reshape(N * Q, C)


def run_rknn(path, names, feeds, op_target=None):
    from rknn.api import RKNN

    log = path + ".log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1), os.dup2(fd, 2)
    try:
        r = RKNN(verbose=True)
        r.config(target_platform="rk3588", op_target=op_target)
        assert r.load_onnx(path, inputs=names, input_size_list=[list(feeds[n].shape)
                                                                for n in names]) == 0
        assert r.build(do_quantization=False) == 0
        assert r.init_runtime(target=None) == 0
        outs = r.inference(inputs=[feeds[n] for n in names],
                           data_format=["nchw"] * len(names))
        r.release()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        os.close(fd)
    with open(log, errors="replace") as f:
        return outs, summarize_ops(parse_op_table(f.read()))


def probe(name, build, work, *, weighted=False, force_npu=()):
    rng = np.random.RandomState(0)
    value = rng.randn(N * H * W, C).astype(np.float32)
    loc = rng.uniform(-0.1, 1.1, (N, Q * P, 2)).astype(np.float32)
    wts = rng.dirichlet(np.ones(P), (N, Q)).astype(np.float32)
    g, out, shape = build()
    inputs = [("value", TP.FLOAT, [N * H * W, C]), ("loc", TP.FLOAT, [N, Q * P, 2])]
    feeds = {"value": value, "loc": loc}
    if weighted:
        inputs.append(("w", TP.FLOAT, [N, Q, P]))
        feeds["w"] = wts
    path = os.path.join(work, name + ".onnx")
    m = g.model(inputs, out, shape)
    onnx.save(m, path)
    names = [i[0] for i in inputs]
    res = {"cpu_layers": None}
    try:
        ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        res["onnxruntime_vs_fp32_formula"] = float(np.abs(
            ref - reference(value, loc, wts if weighted else None, False)).max())
    except Exception as e:  # noqa: BLE001
        res["onnxruntime_error"] = str(e).splitlines()[0][:200]
    target = {n.output[0]: "npu" for n in m.graph.node if n.op_type in force_npu} or None
    try:
        outs, ops = run_rknn(path, names, feeds, target)
    except Exception as e:  # noqa: BLE001  (a probe rknn rejects is a result)
        res["rknn_error"] = str(e).strip().splitlines()[-1][:300]
        return res
    got = np.asarray(outs[0], np.float32).reshape(shape)
    half = reference(value, loc, wts if weighted else None, True)
    rows_off = np.abs(got - half).max(-1) > 0.05   # fp16 values are off by ~1e-3; a wrong
    res.update(npu_layers=ops["npu_layers"], cpu_layers=ops["cpu_layers"],  # pixel by ~1
               cpu_ops=ops["cpu_ops"], rows=int(got.shape[0]),
               rows_reading_another_pixel_than_fp16_floor=int(rows_off.sum()))
    return res


def main():
    work = tempfile.mkdtemp(prefix="rknn_probe_")
    probes = {
        "gather, previous export (Floor, Cast int64, int64 index math)":
            dict(build=lambda: gather_probe("floor_int64")),
        "gather, Clip in float + Cast to int32 (truncation), int32 index math":
            dict(build=lambda: gather_probe("trunc_int32")),
        "gather, Clip in float + Cast to int64 (truncation), int64 index math":
            dict(build=lambda: gather_probe("trunc_int64")),
        "gather, int32 index math, op_target={Gather: npu}":
            dict(build=lambda: gather_probe("trunc_int32"), force_npu=("Gather",)),
        "gather, index math in float, one Cast to int32 before the Gather":
            dict(build=lambda: gather_probe("float_index_one_cast")),
        "one-hot MatMul, 100 queries": dict(build=lambda: onehot_probe(False), weighted=True),
        "one-hot MatMul, queries padded to 104 before the transpose":
            dict(build=lambda: onehot_probe(True), weighted=True),
    }
    results = {}
    for name, kw in probes.items():
        results[name] = probe(name.split(",")[0].replace(" ", "_") + f"_{len(results)}", work=work,
                              **kw)
        print(name, json.dumps(results[name]))
    out = {"toolkit": "rknn-toolkit2 2.5.0, target rk3588, fp16, PC simulator",
           "shapes": {"heads": N, "map": [H, W], "channels": C, "queries": Q, "points": P},
           "command": "PYTHONPATH=. .venv-rknn/bin/python scripts/probe_rknn_sampling.py",
           "probes": results}
    with open(os.path.join(RESULTS, "probe_rknn_sampling.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
