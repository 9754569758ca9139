"""Real PicoDet-S weights + coco_val158 (slow, needs ../shared and output/weights)."""
import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CFG = "configs/picodet/picodet_s_416_coco_ext.yml"
WEIGHTS = "output/weights/picodet_s_416_coco.pdparams"


@pytest.fixture
def picodet_fp32(repo_cwd, shared_data, tmp_path):
    if not os.path.isfile(WEIGHTS):
        pytest.skip(f"{WEIGHTS} missing (tools/convert_picodet_onnx.py writes it)")
    from ppdet_ext.engine import api
    from ppdet_ext.engine.config import load_config

    cfg, user = load_config(CFG)
    out = str(tmp_path / "fp32")
    api.export(cfg, user, weights=WEIGHTS[: -len(".pdparams")], output_dir=out)
    return out, shared_data


def test_bn_fold_exact_and_int8_within_one_ap(picodet_fp32, tmp_path):
    from ppdet_ext_deploy.coco_eval import coco_ap
    from ppdet_ext_deploy.imageio import annotated_images
    from ppdet_ext_deploy.meta import load_meta
    from ppdet_ext.slim.bn_fold import fold_batch_norm
    from ppdet_ext.slim.calib import calib_batches, calib_files
    from ppdet_ext_deploy import Runner
    from ppdet_ext.slim.ptq import PTQConfig, quantize_export

    fp32, shared = picodet_fp32
    images = os.path.join(shared, "coco_val158", "images")
    ann = os.path.join(shared, "coco_val158", "annotations", "instances_val158.json")
    folded = str(tmp_path / "folded")
    assert len(fold_batch_norm(fp32, folded)) > 100
    xs = list(calib_batches(load_meta(fp32), calib_files(images)[100:102]))
    a, b = Runner(fp32, backend="paddle-cpu"), Runner(folded, backend="paddle-cpu")
    for x in xs:
        for o1, o2 in zip(a.backend.infer(x), b.backend.infer(x)):
            np.testing.assert_allclose(o1, o2, rtol=1e-4, atol=1e-3)
    import json

    with open("docs/results/quant/picodet_s_416_sensitivity.json") as f:
        ranked = [layer["name"] for layer in json.load(f)["layers"]]
    skip = ranked[:8]
    # calibrate on coco_bench600 (disjoint from the evaluation set)
    calib = calib_files(os.path.join(shared, "coco_bench600", "images"), 16)
    paths = annotated_images(ann, images)

    def ap_of(model_dir, backend):
        r = Runner(model_dir, backend=backend)
        try:
            return coco_ap(r.run(paths).results, ann, category_ids=r.meta.category_ids)["AP"]
        finally:
            r.close()

    ref = ap_of(fp32, "paddle-cpu")  # 0.3352
    out = str(tmp_path / "int8")
    quantize_export(folded, out, calib, PTQConfig(algo="abs_max", calib_images=16,
                                                  skip_layers=ranked[:32]))
    # top-32 float: measured 0.3284 (top-8: 0.311-0.317; Paddle's default INT8 op set, or
    # int8_ops without fused_conv2d, gave other numbers: docs/quantization.md)
    assert ap_of(out, "paddle-cpu-int8") > ref - 0.01
    from ppdet_ext.export.onnx_export import export_onnx
    from ppdet_ext.slim.onnx_ptq import quantize_onnx_export

    export_onnx(folded)
    ort_out = str(tmp_path / "ort_int8")
    quantize_onnx_export(folded, ort_out, calib, skip_layers=skip)
    # measured 0.3309; with the conv weights left as Constant nodes (quantized like
    # activations, one scale per kernel) it was 0.105 (calibrated on coco_val158)
    assert ap_of(ort_out, "onnxruntime") > ref - 0.01
