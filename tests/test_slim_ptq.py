"""PTQ, sensitivity and ORT INT8 on a tiny seeded export (tests/deploy_fixtures.py), CPU.

Correlations are between INT8 and FP32 raw graph outputs on real coco_mini images.
"""
import os

import numpy as np
import pytest

import ppdet_ext  # noqa: F401  (zlib before paddle)
from ppdet_ext_deploy.meta import load_meta
from deploy_fixtures import COCO_MINI, build_tiny_export

from ppdet_ext.slim.calib import calib_batches, calib_files
from ppdet_ext_deploy import Runner

IMAGES = os.path.join(COCO_MINI, "images")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("slim") / "fp32")
    build_tiny_export(d, num_classes=4, width=8, seed=0, onnx=True)
    files = calib_files(IMAGES, 6)
    return d, files, list(calib_batches(load_meta(d), files[4:6]))


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


def _outputs(model_dir, backend, batches):
    r = Runner(model_dir, backend=backend, backend_options={"threads": 1})
    try:
        return [r.backend.infer(x) for x in batches]
    finally:
        r.close()


@pytest.mark.parametrize("algo", ["abs_max", "avg"])  # avg: Paddle 2.6.2's 0-D sampler bug
def test_ptq_int8_correlates_with_fp32(tiny, tmp_path, algo):
    from ppdet_ext.slim.ptq import PTQConfig, quantize_export

    fp32, files, batches = tiny
    out = str(tmp_path / "int8")
    res = quantize_export(fp32, out, files[:4], PTQConfig(algo=algo, calib_images=4))
    assert res.quantized_layers > 0
    meta = load_meta(out)  # a normal export directory for the runner
    assert meta.output_names == load_meta(fp32).output_names
    ref = _outputs(fp32, "paddle-cpu", batches)
    for backend in ("paddle-cpu", "paddle-cpu-int8"):
        got = _outputs(out, backend, batches)
        for i in range(2):
            c = _corr(np.concatenate([o[i].ravel() for o in ref]), np.concatenate([o[i].ravel() for o in got]))
            assert c > 0.9, (backend, i, c)


def test_ptq_rejects_unknown_skip_layer(tiny, tmp_path):
    from ppdet_ext.slim.ptq import PTQConfig, quantize_export

    fp32, files, _ = tiny
    with pytest.raises(ValueError, match="not among the quantizable layers"):
        quantize_export(fp32, str(tmp_path / "x"), files[:1], PTQConfig(skip_layers=["nope.w_0"]))


def test_ptq_skip_list_keeps_layer_float(tiny, tmp_path):
    from ppdet_ext.slim.ptq import PTQConfig, quantize_export
    from ppdet_ext.slim.static_graph import StaticModel

    fp32, files, _ = tiny
    first = StaticModel(fp32).layers()[0].name
    out = str(tmp_path / "skip")
    quantize_export(fp32, out, files[:2], PTQConfig(algo="abs_max", calib_images=2, skip_layers=[first]))
    prog = StaticModel(out).program
    conv = [op for op in prog.global_block().ops
            if op.type in ("conv2d", "depthwise_conv2d") and op.input("Filter")[0].startswith(first)]
    assert conv, "skipped conv vanished"
    producers = {o: op.type for op in prog.global_block().ops for o in op.output_arg_names}
    assert producers.get(conv[0].input("Filter")[0]) != "dequantize_linear"


def test_library_leaves_dygraph_mode(tiny):
    import paddle

    from ppdet_ext.slim.static_graph import StaticModel

    fp32, _, batches = tiny
    assert paddle.in_dynamic_mode()
    StaticModel(fp32).run(batches[0])
    assert paddle.in_dynamic_mode()


def test_sensitivity_ranks_every_layer(tiny):
    from ppdet_ext.slim.sensitivity import analyze
    from ppdet_ext.slim.static_graph import StaticModel

    fp32, _, batches = tiny
    rep = analyze(fp32, batches, skip_ks=(0, 1, 2))
    n = len({l.name for l in StaticModel(fp32).layers()})
    assert len(rep.layers) == n > 0  # one row per weight (shared head convs once)
    errs = [l["err"] for l in rep.layers]
    assert errs == sorted(errs, reverse=True)
    assert set(rep.summary) == {"all layers INT8", "weights only", "activations only"}
    assert rep.skip_sweep[0]["k"] == 0
    assert rep.skip_sweep[0]["err"] == pytest.approx(rep.summary["all layers INT8"]["err"], rel=1e-6)
    assert rep.skip_list(2) == [l["name"] for l in rep.layers[:2]]
    assert "| rank | layer" in rep.to_markdown()
    assert 0.9 < rep.summary["all layers INT8"]["score_cos"] <= 1.0 + 1e-9


def test_fake_quant_weight_is_per_channel():
    from ppdet_ext.slim.fakequant import fake_quant_weight

    w = np.random.RandomState(0).randn(3, 2, 3, 3).astype("float32")
    w[1] *= 100.0
    q = fake_quant_weight(w)
    for c in range(3):
        step = np.abs(w[c]).max() / 127
        assert np.abs(q[c] - w[c]).max() <= step / 2 + 1e-6


def test_onnx_ptq_qdq_correlates(tiny, tmp_path):
    import onnx

    from ppdet_ext.slim.onnx_ptq import conv_nodes_by_weight, quantize_onnx_export

    fp32, files, batches = tiny
    out = str(tmp_path / "ort")
    skip = sorted(conv_nodes_by_weight(os.path.join(fp32, "model.onnx")))[:1]
    info = quantize_onnx_export(fp32, out, files[:4], skip_layers=skip)
    assert info["skip_layers"] == skip
    m = onnx.load(os.path.join(out, "model.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in m.graph.node)
    ref = _outputs(fp32, "onnxruntime", batches)
    got = _outputs(out, "onnxruntime", batches)
    for i in range(2):
        assert _corr(np.concatenate([o[i].ravel() for o in ref]),
                     np.concatenate([o[i].ravel() for o in got])) > 0.9


def test_onnx_ptq_weights_are_per_channel_int8(tiny, tmp_path):
    """paddle2onnx writes conv weights as ``Constant`` nodes; ORT's quantizer must still see
    them as weights (INT8 initializer, one scale per output channel), not quantize them like
    an activation with one calibrated UINT8 scale per kernel."""
    import onnx
    from onnx import numpy_helper

    from ppdet_ext.slim.onnx_ptq import quantize_onnx_export

    fp32, files, _ = tiny
    src = onnx.load(os.path.join(fp32, "model.onnx"))
    out = str(tmp_path / "ort")
    quantize_onnx_export(fp32, out, files[:2])
    m = onnx.load(os.path.join(out, "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(n.op_type == "Conv" for n in src.graph.node)
    for conv in convs:
        dq = prod[conv.input[1]]
        assert dq.op_type == "DequantizeLinear", conv.name
        w_q, scale = dq.input[0], dq.input[1]
        assert w_q in inits and inits[w_q].dtype == np.int8, f"{conv.name}: weight not an INT8 initializer"
        assert inits[scale].shape == (inits[w_q].shape[0],), f"{conv.name}: not per-channel"
    assert not os.path.exists(os.path.join(out, "model.fp32_initializers.onnx"))


def test_onednn_int8_runs_every_quantized_conv_and_nothing_else(tiny, tmp_path, capfd):
    """``paddle-cpu-int8`` must hand oneDNN the convs *after* its conv+bias+act fusion
    (``fused_conv2d``): with only ``conv2d``/``depthwise_conv2d`` in the op set most convs
    silently stay float; with Paddle's default set pool/concat/split are requantized too
    (PicoDet-S: 5 AP lost). Counts come from the INT8 pass's own log."""
    import re

    from ppdet_ext.slim.ptq import PTQConfig, quantize_export

    fp32, files, batches = tiny
    out = str(tmp_path / "int8")
    res = quantize_export(fp32, out, files[:2], PTQConfig(algo="abs_max", calib_images=2))
    capfd.readouterr()
    _outputs(out, "paddle-cpu-int8", batches[:1])
    log = capfd.readouterr().err
    counts = {op: int(n) for n, op in re.findall(r"quantized (\d+) (\w+) ops(?! with)", log)}
    assert sum(counts.get(op, 0) for op in ("conv2d", "depthwise_conv2d", "fused_conv2d")) \
        == res.quantized_layers, counts
    assert {op: n for op, n in counts.items() if n and "conv2d" not in op} == {}, counts
