"""ONNX export (tools/export_onnx.py) and the ONNX Runtime backend: parity and batching.

Stated tolerances (GFL-tiny, random weights, CPU):
* dygraph vs Paddle Inference vs ONNX Runtime raw outputs: scores <= 1e-5 (sigmoid
  probabilities), boxes <= 1e-3 px (measured: scores ~1e-7, boxes ~2.4e-4 px; the DFL
  softmax-expectation times the stride amplifies float rounding);
* ORT batched (bs 1-8, shape-grouped) vs bs 1 on the runner: the strict match of
  tests/test_deploy_runner.py (IoU >= 0.999, |score diff| <= 1e-4) on the zero-padding-exact
  fixture, and raw-output equality to 1e-5 for GFL-tiny at one padded shape.
"""
import json
import os

import numpy as np
import paddle
import pytest

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy.compare import Tolerance, match_detections, match_images
from ppdet_ext_deploy.formats import create_backend
from ppdet_ext_deploy.meta import read_meta_dict
from ppdet_ext_deploy.runner import Runner
from deploy_fixtures import build_tiny_export, coco_mini_images
from gfl_helpers import export_random_tiny_gfl
from ppdet_ext.export import adapters
from ppdet_ext.export.metadata import ExportError
from ppdet_ext.export.onnx_export import export_onnx, read_onnx_metadata

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SCORE_TOL = 1e-5
BOX_TOL = 1e-3
STRICT = Tolerance(min_score=0.5, score_tol=1e-4, iou_min=0.999, margin=1e-3)


@pytest.fixture(scope="module")
def gfl(tmp_path_factory):
    model, out, _ = export_random_tiny_gfl(tmp_path_factory, "onnx_gfl", seed=5)
    export_onnx(out)
    return model, out


def test_graph_io_and_dynamic_axes(gfl):
    _, out = gfl
    m = onnx.load(os.path.join(out, "model.onnx"))
    assert [i.name for i in m.graph.input] == ["image"]
    assert [o.name for o in m.graph.output] == ["scores", "boxes"]
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert m.opset_import[0].version >= 16
    ops = {n.op_type for n in m.graph.node}
    assert not ops & {"NonMaxSuppression"}, "NMS must stay out of the graph"


def test_metadata_travels_with_onnx(gfl):
    _, out = gfl
    saved = read_meta_dict(out)
    path = os.path.join(out, "model.onnx")
    assert read_onnx_metadata(path) == saved
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(props["label_list"])[0] == "person"
    assert json.loads(props["input_shape"]) == [-1, 3, -1, -1]
    assert [op["type"] for op in json.loads(props["preprocess"])] == \
        ["Resize", "NormalizeImage", "Permute"]
    assert "paddle2onnx 1.3.1" in props["exporter"]


@pytest.mark.parametrize("shape", [(1, 128, 192), (3, 96, 160), (2, 160, 224)])
def test_dygraph_paddle_inference_onnxruntime_parity(gfl, shape):
    model, out = gfl
    b, h, w = shape
    x = np.random.RandomState(1).randn(b, 3, h, w).astype("float32")
    with paddle.no_grad():
        ref = [t.numpy() for t in adapters.raw_outputs(model, paddle.to_tensor(x))]
    pi = create_backend(out, "paddle-cpu", {"threads": 1}).infer(x)
    ort = create_backend(out, "onnxruntime", {"threads": 1}).infer(x)
    for got in (pi, ort):
        assert got[0].shape == ref[0].shape and got[1].shape == ref[1].shape
        assert np.abs(got[0] - ref[0]).max() <= SCORE_TOL
        assert np.abs(got[1] - ref[1]).max() <= BOX_TOL
    assert np.abs(pi[0] - ort[0]).max() <= SCORE_TOL


def test_onnxruntime_batch_equals_single_raw(gfl):
    _, out = gfl
    ort = create_backend(out, "onnxruntime", {"threads": 1})
    x = np.random.RandomState(2).randn(8, 3, 128, 160).astype("float32")
    batched = ort.infer(x)
    for i in (0, 3, 7):
        single = ort.infer(x[i:i + 1])
        for a, s in zip(batched, single):
            np.testing.assert_allclose(a[i:i + 1], s, atol=SCORE_TOL, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = build_tiny_export(str(tmp_path_factory.mktemp("onnx_tiny") / "export"), onnx=False)
    export_onnx(out)
    return out


@pytest.fixture(scope="module")
def tiny_reference(tiny):
    return Runner(tiny, backend="onnxruntime", batch_size=1).run(coco_mini_images(20))


@pytest.mark.parametrize("bs,policy", [(2, "none"), (5, "orientation"), (8, "buckets"),
                                       (8, "none")])
def test_onnxruntime_runner_batched_equals_bs1(tiny, tiny_reference, policy, bs):
    rep = Runner(tiny, backend="onnxruntime", batch_size=bs, policy=policy,
                 backend_options={"threads": 1}).run(coco_mini_images(20))
    assert rep.images_ok == 20
    assert rep.backend["name"] == "onnxruntime"
    assert max(t.images for t in rep.timings) > 1
    total = match_images([a.dets for a in tiny_reference.results], [b.dets for b in rep.results],
                         STRICT)
    assert total.ok, total
    assert total.compared > 50


def test_onnxruntime_runner_matches_paddle(tiny, tiny_reference):
    ref = Runner(tiny, backend="paddle-cpu", batch_size=1).run(coco_mini_images(20))
    loose = Tolerance(min_score=0.5, score_tol=1e-3, iou_min=0.99, margin=2e-3)
    for a, b in zip(ref.results, tiny_reference.results):
        assert match_detections(a.dets, b.dets, loose).ok


def test_standalone_output_dir(tiny, tmp_path):
    out = str(tmp_path / "onnx_only")
    export_onnx(tiny, output_dir=out)
    assert sorted(os.listdir(out)) == ["infer_cfg.yml", "model.onnx"]
    x = np.random.RandomState(0).randn(1, 3, 64, 96).astype("float32")
    a = create_backend(out, "onnxruntime").infer(x)
    b = create_backend(tiny, "paddle-cpu").infer(x)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)


def test_errors_are_clear(tiny, tmp_path):
    with pytest.raises(ExportError, match="not an export directory"):
        export_onnx(str(tmp_path))
    with pytest.raises(ExportError, match="simplify must be one of"):
        export_onnx(tiny, output_dir=str(tmp_path / "x"), simplify="bogus")


def test_cli_help_and_failure_exit_code(tmp_path):
    import subprocess

    from conftest import PYTHON, REPO
    tool = os.path.join(REPO, "tools", "export_onnx.py")
    r = subprocess.run([PYTHON, tool, "--help"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "examples:" in r.stdout
    r = subprocess.run([PYTHON, tool, str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1 and "not an export directory" in r.stderr
