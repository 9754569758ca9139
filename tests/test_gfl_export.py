"""GFL export: static graph + infer_cfg.yml; Paddle Inference == dygraph raw outputs."""
import os

import numpy as np
import paddle
import pytest

from ppdet_ext_deploy.meta import read_meta_dict

from gfl_helpers import export_random_tiny_gfl
from ppdet_ext.export import adapters

SCORE_TOL = 1e-5   # sigmoid probabilities
BOX_TOL = 1e-3     # pixels


def _predictor(model_dir, *, delete_bad_pass=True):
    from paddle import inference
    config = inference.Config(os.path.join(model_dir, "model.pdmodel"),
                              os.path.join(model_dir, "model.pdiparams"))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(2)
    if delete_bad_pass:
        config.delete_pass("matmul_v2_scale_fuse_pass")  # wrong GFL boxes on Paddle 2.6.2
    config.disable_glog_info()
    return inference.create_predictor(config)


def _run(predictor, image):
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(image.shape)
    handle.copy_from_cpu(image)
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_random_tiny_gfl(tmp_path_factory, "export", seed=3)


def test_export_files_and_metadata(exported):
    _, out, meta = exported
    assert {"model.pdmodel", "model.pdiparams", "infer_cfg.yml"} <= set(os.listdir(out))
    saved = read_meta_dict(out)
    assert saved == meta
    assert saved["input_shape"] == [-1, 3, -1, -1]
    assert [op["type"] for op in saved["Preprocess"]] == ["Resize", "NormalizeImage", "Permute"]
    assert saved["Preprocess"][0]["keep_ratio"] is True
    assert saved["pad_stride"] == 32
    assert saved["outputs"] == {"kind": "dense", "names": ["scores", "boxes"]}
    assert saved["Postprocess"]["type"] == "nms"
    assert len(saved["label_list"]) == len(saved["category_ids"]) == 80
    assert saved["label_list"][0] == "person" and saved["category_ids"][-1] == 90


@pytest.mark.parametrize("shape", [(1, 128, 192), (2, 160, 96)])
def test_paddle_inference_matches_dygraph(exported, shape):
    model, out, _ = exported
    b, h, w = shape
    image = np.random.RandomState(0).randn(b, 3, h, w).astype("float32")
    with paddle.no_grad():
        ref = [t.numpy() for t in adapters.raw_outputs(model, paddle.to_tensor(image))]
    got = _run(_predictor(out), image)
    # levels 8/16/32 from the backbone, then two stride-2 extra convs (ceil)
    hw = [(h // s, w // s) for s in (8, 16, 32)]
    for _ in range(2):
        hw.append((-(-hw[-1][0] // 2), -(-hw[-1][1] // 2)))
    n = sum(a * b for a, b in hw)
    assert ref[0].shape == got[0].shape == (b, n, 80)
    assert got[1].shape == (b, n, 4)
    assert np.abs(ref[0] - got[0]).max() <= SCORE_TOL
    assert np.abs(ref[1] - got[1]).max() <= BOX_TOL


def test_matmul_v2_scale_fuse_pass_breaks_gfl_boxes_on_this_paddle(exported):
    # why every predictor we build deletes that pass: with it, Paddle 2.6.2 CPU inference
    # returns garbage GFL boxes. If this starts failing, the pass is fixed upstream.
    model, out, _ = exported
    image = np.random.RandomState(0).randn(1, 3, 128, 192).astype("float32")
    with paddle.no_grad():
        ref = adapters.raw_outputs(model, paddle.to_tensor(image))[1].numpy()
    got = _run(_predictor(out, delete_bad_pass=False), image)[1]
    assert np.abs(ref - got).max() > 1.0


@pytest.mark.parametrize("mkldnn", [False, True])
def test_deploy_paddle_backend_matches_dygraph(exported, mkldnn):
    # the deploy runner's own predictor config (pass deletion must come last in it)
    from ppdet_ext_deploy.formats import create_backend
    from ppdet_ext_deploy.backends.base import ShapeRange
    model, out, _ = exported
    image = np.random.RandomState(1).randn(2, 3, 128, 192).astype("float32")
    with paddle.no_grad():
        ref = [t.numpy() for t in adapters.raw_outputs(model, paddle.to_tensor(image))]
    backend = create_backend(out, "paddle-cpu", {"threads": 2, "mkldnn": mkldnn})
    backend.prepare(ShapeRange.from_shapes([(2, 128, 192)]))
    got = backend.infer(image)
    backend.close()
    tol = 1e-4 if mkldnn else SCORE_TOL
    assert np.abs(ref[0] - got[0]).max() <= tol
    assert np.abs(ref[1] - got[1]).max() <= (1e-2 if mkldnn else BOX_TOL)
