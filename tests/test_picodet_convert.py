"""PicoDet ONNX -> ppdet conversion: mapping checks, identity BN, ONNX parity, adapter.

The conversion tests need the real ONNX file in ../shared/data/models and skip with a
reason without it; the adapter/BN tests run anywhere (random weights, tiny inputs).
Tolerances (float32, CPU): scores 1e-4 abs, DFL logits 1e-3 abs, boxes 0.02 px.
"""
import os

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA
from ppdet_ext_deploy.imageio import list_images

CONFIG_320 = os.path.join(REPO, "configs", "picodet", "picodet_s_320_coco_ext.yml")
ONNX_320 = os.path.join(SHARED_DATA, "models", "picodet_s_320_coco.onnx")
IMAGES = os.path.join(SHARED_DATA, "coco_val158", "images")


def _need_onnx():
    if not os.path.isfile(ONNX_320):
        pytest.skip(f"{ONNX_320} not found (../shared/data/models only on dev machines)")
    pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def converted():
    """(model, report) converted from the 320 ONNX file, once per module."""
    _need_onnx()
    from ppdet_ext.convert import convert_picodet_onnx
    from ppdet_ext.registry import reset_global_config

    out = convert_picodet_onnx(ONNX_320, CONFIG_320)
    reset_global_config()
    return out


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 1e-6, 1e-4])
def test_identity_bn_variance_makes_bn_exact(eps):
    from ppdet_ext.convert import identity_bn_variance

    var = identity_bn_variance(eps)
    assert var.dtype == np.float32
    assert np.float32(var + np.float32(eps)) == np.float32(1.0)


def test_mapping_uses_every_conv_once(converted):
    _, report = converted
    assert report.onnx_convs == report.model_convs == report.mapped == 133
    assert report.into_bn + report.into_conv_bias == 133
    assert report.into_bn == 103           # convs that had a BN (folded in the export)
    assert report.names_checked == 30      # SE convs + head_cls kept conv2d_N.w_0
    assert len({p[0] for p in report.pairs}) == len({p[2] for p in report.pairs}) == 133


def test_mapping_rejects_swapped_convs(converted):
    """Swapping two same-shape convs is caught by the kept Paddle names, two different
    shapes by the geometry check."""
    from ppdet_ext.convert import map_convs, read_onnx_convs, trace_conv_slots

    model, _ = converted
    convs = read_onnx_convs(ONNX_320)
    slots = trace_conv_slots(model, (64, 64))
    map_convs(convs, slots)                                  # the real order passes
    named = [k for k, c in enumerate(convs) if c.weight_name.startswith("conv2d_")]
    same = next((a, b) for a in named for b in named
                if a < b and convs[a].weight.shape == convs[b].weight.shape)
    for a, b in (same, (0, 1)):
        bad = list(slots)
        bad[a], bad[b] = bad[b], bad[a]
        with pytest.raises(ValueError, match="mapping failed"):
            map_convs(convs, bad)


def test_dygraph_matches_onnx_on_real_images(converted, shared_data):
    from ppdet_ext.convert.parity import compare_raw, preprocess_image

    model, _ = converted
    paths = list_images(os.path.join(IMAGES, "*.jpg"), 2, require=False)
    if not paths:
        pytest.skip(f"no images in {IMAGES}")
    diffs = compare_raw(model, ONNX_320, [preprocess_image(p, 320) for p in paths])
    assert max(v for k, v in diffs.items() if k.startswith("scores")) <= 1e-4, diffs
    assert max(v for k, v in diffs.items() if k.startswith("dfl")) <= 1e-3, diffs
    assert diffs["boxes_px"] <= 0.02, diffs


def _random_picodet():
    import paddle

    from ppdet_ext.convert import build_model

    paddle.seed(0)
    model, _ = build_model(CONFIG_320)
    return model


def test_adapter_dense_outputs_batch_and_odd_size():
    """Batch-dynamic, non-square input: shapes, box geometry, per-image == batched."""
    import paddle

    from ppdet_ext.export.adapter_picodet import picodet_raw_outputs

    model = _random_picodet()
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((2, 3, 96, 160)).astype("float32"))
    with paddle.no_grad():
        scores, boxes = picodet_raw_outputs(model, x)
        one_s, one_b = picodet_raw_outputs(model, x[1:2])
    n = 12 * 20 + 6 * 10 + 3 * 5 + 2 * 3            # strides 8/16/32/64, ceil division
    assert scores.shape == [2, n, 80] and boxes.shape == [2, n, 4]
    s, b = scores.numpy(), boxes.numpy()
    assert (s >= 0).all() and (s <= 1).all()
    assert (b[..., 2] >= b[..., 0]).all() and (b[..., 3] >= b[..., 1]).all()
    # first cell of stride 8 is centred at (4, 4); DFL distances are within reg_max*stride
    assert b[0, 0, 0] <= 4 <= b[0, 0, 2] and b[0, 0, 2] - 4 <= 7 * 8 + 1e-4
    np.testing.assert_allclose(one_s.numpy()[0], s[1], atol=1e-5)
    np.testing.assert_allclose(one_b.numpy()[0], b[1], atol=1e-3)


def test_adapter_is_registered_for_picodet():
    from ppdet_ext.export import adapters

    model = _random_picodet()
    assert adapters.supports_export(model)
    post = adapters.postprocess_cfg(model)
    assert post["type"] == "nms" and post["nms_threshold"] == pytest.approx(0.6)
