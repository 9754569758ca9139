"""RT-DETRv2 ONNX export and the RKNN-friendly NPU/CPU split (ppdet_ext/export/rknn_split.py).

Runs without rknn-toolkit2: the split is checked on ONNX Runtime. Tiny model (hidden 64,
1 decoder layer, 30 queries), 160x160, random init, CPU.

Stated tolerances:
* split (encoder.onnx -> numpy top-k -> decoder.onnx) vs the unsplit model.onnx on ORT: the
  same detections — scores equal to 1e-5 (measured 0.0), boxes to 1e-4 px (measured 7.6e-6:
  the decoder part carries box logits instead of the sigmoid -> log round trip).
* gather-free discrete sampling (one-hot MatMuls, the form every graph of a split export uses)
  vs the Gather form: equal to 1e-6, including locations on and one ulp below pixel borders.
* default (bilinear) sampling: ORT vs dygraph scores <= 1e-5, boxes <= 1e-3 px.
* discrete sampling rounds the sampling location (floor(u * size + 0.5)): an engine whose
  float rounding differs by one ulp can read the neighbouring pixel, so ORT/Paddle Inference vs dygraph is only
  checked loosely (scores <= 0.05); the split itself is exact.
"""
import os

import numpy as np
import onnx
import paddle
import pytest
from ppdet.core.workspace import create

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy.rknn.split import onnxruntime_split_pipeline, select_queries
from ppdet_ext_deploy.formats import create_backend
from ppdet_ext_deploy.postprocess import postprocess_batch
from ppdet_ext_deploy.meta import load_meta
from ppdet_ext.export import adapters, export_model
from ppdet_ext.export.metadata import ExportError
from ppdet_ext.export.onnx_export import export_onnx
from ppdet_ext.export.rknn_split import FORBIDDEN_NPU_OPS, check_npu_graph, export_rtdetr_split
from ppdet_ext.modeling.rtdetr.box_ops import inverse_sigmoid
from ppdet_ext.modeling.rtdetr.deformable_attention import ExtMSDeformableAttention
from ppdet_ext.modeling.rtdetr.sampling import onehot_index
from rtdetr_helpers import load_tiny_config

pytest.importorskip("onnxruntime")
SIZE = 160


def _model(method, seed=0):
    cfg = load_tiny_config(decoder={"sampling_method": method})
    paddle.seed(seed)
    model = create(cfg.architecture)
    model.eval()
    model.convert_to_deploy()
    return cfg, model


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    from ppdet_ext.registry import reset_global_config
    reset_global_config()
    cfg, model = _model("discrete")
    out = str(tmp_path_factory.mktemp("rtdetr_split") / "export")
    export_rtdetr_split(cfg, out, model=model, input_shape=(SIZE, SIZE))
    reset_global_config()
    return model, out


@pytest.fixture(scope="module")
def inputs():
    return np.random.RandomState(0).rand(2, 3, SIZE, SIZE).astype("float32")


def test_npu_graphs_have_no_forbidden_ops(split_dir):
    _, out = split_dir
    for name in ("encoder.onnx", "decoder.onnx"):
        m = onnx.load(os.path.join(out, name))
        ops = {n.op_type for n in m.graph.node}
        assert not ops & set(FORBIDDEN_NPU_OPS), (name, sorted(ops & set(FORBIDDEN_NPU_OPS)))
        assert {"GridSample", "TopK", "GatherND", "Range"}.isdisjoint(ops)
        for v in list(m.graph.input) + list(m.graph.output):  # fully static shapes
            assert all(d.dim_value > 0 for d in v.type.tensor_type.shape.dim), v.name
    # what rknn-toolkit2 2.5.0 runs on the CPU (docs/onnx_rknn.md): none of it in the parts
    cpu_only = {"Gather", "GatherElements", "Floor", "Cast", "Log", "ReduceMax"}
    for name in ("encoder.onnx", "decoder.onnx"):
        ops = {n.op_type for n in onnx.load(os.path.join(out, name)).graph.node}
        assert not ops & cpu_only, (name, sorted(ops & cpu_only))
    assert check_npu_graph(os.path.join(out, "model.onnx")) == ["TopK"]  # the unsplit graph


def test_export_leaves_the_model_on_the_gather_path(split_dir):
    model, _ = split_dir
    flags = [m.gather_free for m in model.sublayers() if hasattr(m, "gather_free")]
    assert flags and not any(flags)


def test_split_metadata(split_dir):
    _, out = split_dir
    meta = load_meta(out)
    assert meta.input_shape == (1, 3, SIZE, SIZE)
    assert meta.post.type == "topk"
    from ppdet_ext_deploy.rknn.split import split_config
    cfg = split_config(out)
    assert cfg["num_queries"] == 30 and cfg["sampling"] == ["discrete"] and cfg["gather_free"]
    assert cfg["decoder_input_shapes"][0] == [1, 30, 64]
    assert cfg["encoder_outputs"][0] == "enc_logits"


def test_split_equals_unsplit(split_dir, inputs):
    _, out = split_dir
    pipe = onnxruntime_split_pipeline(out)
    ort = create_backend(out, "onnxruntime", {"threads": 1})
    meta = load_meta(out)
    for i in range(len(inputs)):
        x = inputs[i:i + 1]
        a, b = pipe(x), ort.infer(x)
        np.testing.assert_allclose(a[0], b[0], atol=1e-5)
        np.testing.assert_allclose(a[1], b[1], atol=1e-4)
        da = postprocess_batch(a, meta.output_names, meta.post, [(1.0, 1.0)], [(SIZE, SIZE)])
        db = postprocess_batch(b, meta.output_names, meta.post, [(1.0, 1.0)], [(SIZE, SIZE)])
        np.testing.assert_allclose(da[0], db[0], atol=1e-4)


def test_discrete_engines_close_to_dygraph(split_dir, inputs):
    model, out = split_dir
    x = inputs[:1]
    with paddle.no_grad():
        ref = [t.numpy() for t in adapters.raw_outputs(model, paddle.to_tensor(x))]
    for name in ("onnxruntime", "paddle-cpu"):
        got = create_backend(out, name, {"threads": 1}).infer(x)
        assert np.abs(got[0] - ref[0]).max() < 0.05
        assert np.abs(got[1] - ref[1]).max() < 1.0


def test_default_sampling_onnx_parity(tmp_path, inputs):
    from ppdet_ext.registry import reset_global_config
    reset_global_config()
    cfg, model = _model("default")
    out = str(tmp_path / "default")
    export_model(cfg, out, model=model, input_shape=[SIZE, SIZE], batch_size=1)
    reset_global_config()
    export_onnx(out)
    ops = {n.op_type for n in onnx.load(os.path.join(out, "model.onnx")).graph.node}
    assert "GridSample" in ops and onnx.load(os.path.join(out, "model.onnx")).opset_import[0].version >= 16
    x = inputs[:1]
    with paddle.no_grad():
        ref = [t.numpy() for t in adapters.raw_outputs(model, paddle.to_tensor(x))]
    got = create_backend(out, "onnxruntime", {"threads": 1}).infer(x)
    assert np.abs(got[0] - ref[0]).max() <= 1e-5
    assert np.abs(got[1] - ref[1]).max() <= 1e-3
    with pytest.raises(ExportError, match="discrete"):
        export_rtdetr_split(cfg, str(tmp_path / "refused"), model=model, input_shape=(SIZE, SIZE))


def test_select_queries_is_topk_gather():
    rng = np.random.RandomState(0)
    s, mem, coord = rng.randn(2, 50), rng.randn(2, 50, 8), rng.randn(2, 50, 4)
    t, r = select_queries(s, mem, coord, 5)
    for b in range(2):
        idx = np.argsort(-s[b])[:5]
        np.testing.assert_array_equal(t[b], mem[b, idx])
        np.testing.assert_array_equal(r[b], coord[b, idx])
    logits = rng.randn(2, 50, 3)                       # [B, L, C]: the max is taken here
    t2, r2 = select_queries(logits, mem, coord, 5)
    t3, r3 = select_queries(logits.max(-1), mem, coord, 5)
    np.testing.assert_array_equal(t2, t3)
    np.testing.assert_array_equal(r2, r3)


SHAPES = [(5, 7), (3, 4), (2, 6)]   # rectangular, both orientations
POINTS = [3, 2, 4]


def test_onehot_index_is_rounding_at_and_below_borders():
    size = 7
    # u * size on a rounding border (k - 0.5), one ulp below one, and elsewhere
    v = np.array([2.5, np.nextafter(np.float32(2.5), np.float32(0.0)), 3.0, 0.0, 6.49, 6.5,
                  -0.7, 9.0, np.nextafter(np.float32(0.5), np.float32(0.0)), 0.5], "float32")
    coord = v / size
    got = onehot_index(paddle.to_tensor(coord.reshape(-1, 1)), size).numpy()
    want = np.clip(np.floor(coord * np.float32(size) + np.float32(0.5)), 0, size - 1).astype(int)
    np.testing.assert_array_equal(got, np.eye(size, dtype="float32")[want])


@pytest.mark.parametrize("lq", [13, 16])      # padded to a multiple of 8 / not padded
def test_gather_free_sampling_equals_gather(lq):
    rng = np.random.RandomState(0)
    b, heads, dim = 2, 2, 16
    attn = ExtMSDeformableAttention(dim, heads, len(SHAPES), POINTS, method="discrete")
    length = sum(h * w for h, w in SHAPES)
    value = paddle.to_tensor(rng.randn(b, length, heads, dim // heads).astype("float32"))
    loc = rng.uniform(-0.3, 1.3, (b, lq, heads, sum(POINTS), 2)).astype("float32")
    size = np.array([[w, h] for (h, w), p in zip(SHAPES, POINTS) for _ in range(p)], "float32")
    k = rng.randint(0, 8, loc.shape).astype("float32")
    border = (k - 0.5) / size                              # on a border (or one ulp off it)
    below = np.nextafter(border, np.float32(-1.0))
    pick = rng.randint(0, 3, loc.shape)
    loc = np.where(pick == 0, border, np.where(pick == 1, below, loc)).astype("float32")
    loc = paddle.to_tensor(loc)
    weights = paddle.nn.functional.softmax(
        paddle.to_tensor(rng.randn(b, lq, heads, sum(POINTS)).astype("float32")), -1)
    ref = attn.attend(value, SHAPES, loc, weights).numpy()
    assert attn.set_gather_free(True) is False
    got = attn.attend(value, SHAPES, loc, weights).numpy()
    attn.set_gather_free(False)
    assert got.shape == ref.shape == (b, lq, dim)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="discrete"):
        ExtMSDeformableAttention(dim, heads, len(SHAPES), POINTS).set_gather_free(True)


def test_logit_carry_equals_inverse_sigmoid_round_trip():
    from ppdet_ext.modeling.rtdetr.decoder import _LOGIT_CLIP
    z = paddle.to_tensor(np.linspace(-30, 30, 601).astype("float32"))
    ref = inverse_sigmoid(paddle.nn.functional.sigmoid(z)).numpy()
    got = z.clip(-_LOGIT_CLIP, _LOGIT_CLIP).numpy()
    # the fp32 round trip itself loses precision as |z| grows (1 - sigmoid(z) nears the ulp
    # of 1.0, 6e-8): ~6e-8 / (1 - sigmoid(z)), 5e-3 just inside the clip at |z| = 11.5
    np.testing.assert_allclose(got, ref, atol=1e-2)
    np.testing.assert_allclose(got[np.abs(z.numpy()) < 4], ref[np.abs(z.numpy()) < 4], atol=1e-5)


def test_split_refuses_non_detr(tmp_path):
    from gfl_helpers import write_test_config
    from ppdet_ext.engine.config import load_config
    from ppdet_ext.export import build_model
    from ppdet_ext.registry import reset_global_config
    reset_global_config()
    cfg, _ = load_config(write_test_config(tmp_path))
    with pytest.raises(ExportError, match="RT-DETR only"):
        export_rtdetr_split(cfg, str(tmp_path / "x"), model=build_model(cfg))
    reset_global_config()
