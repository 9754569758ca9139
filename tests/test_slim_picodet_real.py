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


def test_bn_fold_exact_and_ptq_skip8_keeps_detections(picodet_fp32, tmp_path):
    from deploy.coco_eval import coco_ap, image_paths
    from deploy.meta import load_meta
    from ppdet_ext.slim.bn_fold import fold_batch_norm
    from ppdet_ext.slim.calib import calib_batches, calib_files
    from deploy import Runner
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
    skip = ["conv2d_27.w_0", "conv2d_8.w_0", "conv2d_1.w_0", "conv2d_66.w_0", "conv2d_23.w_0",
            "conv2d_115.w_0", "conv2d_4.w_0", "conv2d_3.w_0"]  # sensitivity top 8
    out = str(tmp_path / "int8")
    quantize_export(folded, out, calib_files(images, 16), PTQConfig(algo="avg", calib_images=16,
                                                                    skip_layers=skip))
    r = Runner(out, backend="paddle-cpu-int8")
    ap = coco_ap(r.run(image_paths(ann, images)).results, ann, category_ids=r.meta.category_ids)
    assert ap["AP"] > 0.15  # measured 0.197 (FP32 0.335): see docs/quantization.md
