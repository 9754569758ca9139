"""RKNN (rknn-toolkit2 PC simulator, rk3588) behind the runner interface.

rknn-toolkit2 is an optional extra in its own venv (bash scripts/setup_rknn_env.sh ->
.venv-rknn); without it the simulator tests skip with that reason, and only the pure-Python
parts (op-table parsing, availability message) run.

Stated tolerance, fp16 simulator vs ONNX Runtime on the same fixed-shape graph: scores
(probabilities) <= 5e-3, boxes <= 1e-3 x the largest |box| coordinate (fp16 has an 11-bit
mantissa: ~0.5 px at 1000 px).
"""
import os

import numpy as np
import paddle
import pytest

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy.backends.rknn import RknnSimBackend
from ppdet_ext_deploy.rknn import hybrid, report, split, worker
from ppdet_ext_deploy.formats import FormatUnavailable, check_available, create_backend, get_format
from ppdet_ext_deploy.runner import Runner
from deploy_fixtures import coco_mini_images

REASON = worker.unavailable_reason()
needs_rknn = pytest.mark.skipif(REASON is not None, reason=str(REASON))

LOG = """I rknn building ...
D RKNN: [16:43:24.960] ID   OpType             DataType Target InputShape    OutputShape   FullName
D RKNN: [16:43:24.960] ----------------------------------------------------------------------
D RKNN: [16:43:24.960] 0    InputOperator      FLOAT16  CPU    \\             (1,3,416,416) InputOperator:image
D RKNN: [16:43:24.960] 1    ConvHardSwish      FLOAT16  NPU    (1,3,416,416) (1,24,208,208) Conv:Conv.0
D RKNN: [16:43:24.960] 2    exSoftmax13        FLOAT16  NPU    (1,4,8)       (1,4,8)        Softmax:Softmax.0
D RKNN: [16:43:24.960] 3    TopK               FLOAT16  CPU    (1,8400)      (1,300)        TopK:TopK.0
D RKNN: [16:43:24.960] 4    OutputOperator     FLOAT16  CPU    (1,300)       \\              OutputOperator:scores
D RKNN: [16:43:24.960] ----------------------------------------------------------------------
D RKNN: [16:43:25.041] Total Internal Memory Size: 9126KB
"""


def test_op_table_parsing():
    rows = report.parse_op_table(LOG)
    assert [r["op"] for r in rows] == ["InputOperator", "ConvHardSwish", "exSoftmax13", "TopK",
                                       "OutputOperator"]
    s = report.summarize_ops(rows)
    assert (s["layers"], s["npu_layers"], s["cpu_layers"]) == (3, 2, 1)
    assert s["cpu_ops"] == {"TopK": 1} and s["cpu_fallbacks"] == ["TopK (TopK:TopK.0)"]
    md = report.op_report_markdown(s, "demo", "python tools/convert_rknn.py x")
    assert "| TopK | 0 | 1 |" in md and "python tools/convert_rknn.py x" in md


def test_missing_toolkit_gives_a_clear_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("RKNN_PYTHON", str(tmp_path / "no-such-python"))
    reason = worker.unavailable_reason()
    assert "setup_rknn_env.sh" in reason
    with pytest.raises(FormatUnavailable, match="setup_rknn_env.sh"):
        check_available(get_format("rknn-sim"))


def test_convert_cli_exits_nonzero_without_toolkit(tmp_path):
    import subprocess

    from conftest import PYTHON, REPO
    env = dict(os.environ, RKNN_PYTHON=str(tmp_path / "none"))
    r = subprocess.run([PYTHON, os.path.join(REPO, "tools", "convert_rknn.py"), str(tmp_path),
                        "--output_dir", str(tmp_path / "o")], capture_output=True, text=True,
                       cwd=REPO, env=env)
    assert r.returncode == 2 and "setup_rknn_env.sh" in r.stderr


@pytest.fixture(scope="module")
def tiny_fixed(tmp_path_factory):
    """Tiny conv detector exported at a fixed [1, 3, 160, 160] with model.onnx (folded)."""
    from ppdet_ext_deploy.meta import load_meta, read_meta_dict, write_meta
    from deploy_fixtures import build_tiny_export
    from ppdet_ext.export.onnx_export import export_onnx

    out = str(tmp_path_factory.mktemp("rknn_tiny") / "export")
    build_tiny_export(out, target_size=(160, 160), keep_ratio=False, pad_stride=0)
    # re-save with a fixed input so the graph and metadata agree with RKNN's fixed shape
    from deploy_fixtures import tiny_layer
    static = paddle.jit.to_static(tiny_layer(), input_spec=[
        paddle.static.InputSpec([1, 3, 160, 160], "float32", "image")], full_graph=True)
    paddle.jit.save(static, os.path.join(out, "model"))
    cfg = read_meta_dict(out)
    cfg["input_shape"] = [1, 3, 160, 160]
    write_meta(out, cfg)
    export_onnx(out)
    assert load_meta(out).fixed_hw == (160, 160)
    return out


def test_dynamic_shape_is_refused(tmp_path):
    from ppdet_ext_deploy.meta import load_meta
    from deploy_fixtures import build_tiny_export

    out = build_tiny_export(str(tmp_path / "dyn"), onnx=True)
    with pytest.raises(ValueError, match="fixed input shape"):
        RknnSimBackend(load_meta(out))


@needs_rknn
def test_simulator_fp16_matches_onnxruntime_and_runs_in_the_runner(tiny_fixed, tmp_path):
    x = np.random.RandomState(0).randn(2, 3, 160, 160).astype("float32")
    ort = create_backend(tiny_fixed, "onnxruntime", {"threads": 1})
    ref = [np.concatenate(o) for o in zip(*[ort.infer(x[i:i + 1]) for i in range(2)])]
    sim = create_backend(tiny_fixed, "rknn-sim", {"log_dir": str(tmp_path / "log"),
                                                  "export_path": str(tmp_path / "m.rknn")})
    try:
        got = sim.infer(x)                       # B = 2 runs image by image
        assert got[0].shape == ref[0].shape and got[1].shape == ref[1].shape
        assert np.abs(got[0] - ref[0]).max() <= 5e-3
        assert np.abs(got[1] - ref[1]).max() <= 1e-3 * max(1.0, np.abs(ref[1]).max())
        assert sim.ops["npu_layers"] > 0
        assert not {"Conv", "ConvRelu"} & set(sim.ops["cpu_ops"])
        assert os.path.getsize(tmp_path / "m.rknn") > 0
        assert sim.describe()["mode"] == "simulator"
    finally:
        sim.close()
    images = coco_mini_images(4)
    a = Runner(tiny_fixed, backend="onnxruntime", batch_size=1).run(images)
    b = Runner(tiny_fixed, backend="rknn-sim", batch_size=2,
               backend_options={"log_dir": str(tmp_path / "log2")}).run(images)
    assert b.images_ok == 4 and b.backend["name"] == "rknn-sim"
    from ppdet_ext_deploy.compare import Tolerance, match_images
    # fp16 moves near-tied scores of the toy model's heavily overlapping boxes, which can
    # change which box NMS keeps: at least 95% of detections must match one-to-one
    tol = Tolerance(min_score=0.5, score_tol=5e-3, iou_min=0.98, margin=1e-2)
    total = match_images([r.dets for r in a.results], [r.dets for r in b.results], tol)
    assert total.compared > 50 and total.unmatched <= 0.05 * total.compared, total


@needs_rknn
@pytest.mark.slow
def test_rtdetr_split_on_the_simulator(tmp_path):
    """The split RT-DETR (discrete sampling) builds for rk3588 with nothing but reshapes on
    the CPU (no TopK/GridSample/GatherND, and with the gather-free sampling no Gather, Floor,
    Cast, Log or ReduceMax either), and the fp16 simulator tracks ONNX Runtime's split
    pipeline. Decoder on the same inputs: boxes <= 1e-3 x 160 px; scores <= 0.05, since a
    random init puts sampling points on pixel borders, where fp16 locations read the
    neighbouring pixel (docs/onnx_rknn.md)."""
    import onnxruntime
    from ppdet.core.workspace import create

    from ppdet_ext.export.rknn_split import export_rtdetr_split
    from ppdet_ext.registry import reset_global_config
    from rtdetr_helpers import load_tiny_config

    reset_global_config()
    cfg = load_tiny_config(decoder={"sampling_method": "discrete"})
    paddle.seed(0)
    model = create(cfg.architecture)
    model.eval()
    model.convert_to_deploy()
    out = str(tmp_path / "split")
    export_rtdetr_split(cfg, out, model=model, input_shape=(160, 160))
    reset_global_config()
    x = np.random.RandomState(0).rand(1, 3, 160, 160).astype("float32")
    ref = split.onnxruntime_split_pipeline(out)(x)
    sim = create_backend(out, "rknn-sim", {"log_dir": str(tmp_path / "log"),
                                           "disable_rules": worker.DETR_DISABLE_RULES})
    try:
        got = sim.infer(x)
        assert set(sim.workers) == {"encoder", "decoder"}
        assert {"TopK", "GridSample", "GatherND"}.isdisjoint(sim.ops["cpu_ops"])
        assert set(sim.ops["cpu_ops"]) <= {"Reshape", "Transpose"}, sim.ops["cpu_ops"]
        assert [g.shape for g in got] == [r.shape for r in ref]
        cfg = split.split_config(out)
        enc = onnxruntime.InferenceSession(os.path.join(out, cfg["encoder"]),
                                           providers=["CPUExecutionProvider"])
        dec = onnxruntime.InferenceSession(os.path.join(out, cfg["decoder"]),
                                           providers=["CPUExecutionProvider"])
        feeds = []  # the decoder inputs of ONNX Runtime's split pipeline, fed to RKNN too

        def run_decoder(*xs):
            feeds.extend(xs)
            return dec.run(["scores", "boxes"], dict(zip(cfg["decoder_inputs"], xs)))

        want = split.SplitPipeline.from_config(
            cfg, lambda im: enc.run(list(cfg["encoder_outputs"]), {"image": im}), run_decoder)(x)
        have = sim.workers["decoder"].infer(*feeds)
        assert np.abs(have[0] - want[0]).max() <= 0.05
        assert np.abs(have[1] - want[1]).max() <= 1e-3 * 160
        # a random init has near-tied token scores, so fp16 can reorder the selected queries:
        # compare the best scores, not query by query
        top = lambda a: np.sort(a.ravel())[-10:]  # noqa: E731
        assert np.abs(top(got[0]) - top(ref[0])).max() <= 0.1
    finally:
        sim.close()


def _conv_names(onnx_path):
    import onnx

    g = onnx.load(onnx_path, load_external_data=False).graph
    return [(n.name, n.input[1]) for n in g.node if n.op_type == "Conv"]


def test_float_layers_resolve_to_rknn_layer_names(tiny_fixed, tmp_path):
    """--float_layers / --float_span name convs (node or Paddle weight name) and tensor spans;
    they become the output tensors (= rknn layer names) written as float16 into the hybrid
    cfg; unknown names fail with the name."""
    path = os.path.join(tiny_fixed, "model.onnx")
    convs = _conv_names(path)
    (node0, w0), (node1, w1) = convs[0], convs[1]
    by_weight = hybrid.float_tensors(path, [w0])
    assert by_weight and by_weight == hybrid.float_tensors(path, [node0])
    both = hybrid.float_tensors(path, [w0, node1])
    assert both[:len(by_weight)] == by_weight and len(both) > len(by_weight)
    # a span from the graph input through the first conv layer marks that layer (at least)
    span = hybrid.float_tensors(path, spans=[["image", by_weight[-1]]])
    assert set(by_weight) <= set(span)
    with pytest.raises(ValueError, match="no_such.w_0"):
        hybrid.float_tensors(path, ["no_such.w_0"])
    with pytest.raises(ValueError, match="no_such_tensor"):
        hybrid.float_tensors(path, spans=[["image", "no_such_tensor"]])
    cfg = tmp_path / "model.quantization.cfg"
    cfg.write_text("custom_quantize_layers:\n    a: float16\nquantize_parameters:\n    image:\n"
                   "        dtype: float32\n")
    assert hybrid.mark_float16(str(cfg), ["b", "c"]) == 3
    import yaml
    data = yaml.safe_load(cfg.read_text())
    assert data["custom_quantize_layers"] == {"a": "float16", "b": "float16", "c": "float16"}
    assert data["quantize_parameters"]["image"]["dtype"] == "float32"
    sens = tmp_path / "sens.json"
    sens.write_text('{"layers": [{"name": "%s"}, {"name": "%s"}]}' % (w1, w0))
    assert hybrid.sensitive_layers(str(sens), 1) == [w1]


@needs_rknn
def test_hybrid_float_layers_build_fp16_layers(tiny_fixed, tmp_path):
    """tools/convert_rknn.py --quant hybrid --float_layers: the named conv runs in fp16 and
    the rest in int8 (rknn's own layer table)."""
    import json
    import subprocess

    from conftest import PYTHON, REPO
    node = _conv_names(os.path.join(tiny_fixed, "model.onnx"))[0][0]
    out = tmp_path / "hybrid"
    r = subprocess.run([PYTHON, os.path.join(REPO, "tools", "convert_rknn.py"), tiny_fixed,
                        "--quant", "hybrid", "--float_ops", "--float_layers", node,
                        "--calib", os.path.dirname(coco_mini_images(1)[0]), "--calib_images", "2",
                        "--output_dir", str(out)], capture_output=True, text=True, cwd=REPO,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out / "op_report.json").read_text())
    dtypes = rep["ops"]["dtypes"]
    assert dtypes.get("FLOAT16", 0) >= 1 and dtypes.get("INT8", 0) >= 1, dtypes
    log = (out / "build_hybrid.log").read_text(errors="replace")
    assert "cfg float16 layers" in log
    rows = report.parse_op_table(log)
    assert any(r["dtype"] == "FLOAT16" and r["name"].endswith(node) for r in rows), rows
