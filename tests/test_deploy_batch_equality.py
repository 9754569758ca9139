"""bs > 1 gives each image the detections it gets at bs = 1, end to end through the Runner,
for the two model families this project exports: GFL (keep-ratio resize, dynamic H/W,
padding-invariant graph) and RT-DETRv2 (fixed-size resize, no padding).

Random-init tiny models on a mixed portrait/landscape/square set, so batches pad under
``none`` and ``orientation``. Stated tolerance: each image's top ``TOP`` detections at
bs = 1 (and everything scoring as high at bs > 1) have a same-class partner with
|Δscore| <= ``SCORE_TOL`` and IoU >= ``IOU_MIN``, both ways.
"""
import numpy as np
import pytest
from PIL import Image

from export_helpers import export_in_repo

TOP = 10
SCORE_TOL = 1e-4
IOU_MIN = 0.99
SIZES = [(90, 140), (140, 90), (120, 120), (60, 200), (200, 70), (100, 150), (150, 100)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    paths = []
    for k, (h, w) in enumerate(SIZES):
        yy, xx = np.mgrid[0:h, 0:w]
        img = (rng.integers(0, 256, (h, w, 3)) // 2
               + 60 * (((yy // 16) + (xx // 16)) % 2)[..., None]).astype(np.uint8)
        p = str(d / f"img{k}_{h}x{w}.png")
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def _lift_class_bias(model, names):
    """Random-init heads start every class logit at the 0.01 prior; a zero bias spreads
    the scores so the top detections are well apart from ties and cut-offs."""
    lifted = 0
    for name, p in model.named_parameters():
        if any(n in name for n in names) and name.endswith("bias"):
            p.set_value(np.zeros(p.shape, "float32"))
            lifted += 1
    assert lifted, f"no class bias named {names}"


@pytest.fixture(scope="module")
def gfl_dir(tmp_path_factory):
    from gfl_helpers import write_test_config

    tmp = tmp_path_factory.mktemp("gfl_eq")
    return export_in_repo(write_test_config(tmp), str(tmp / "gfl"), seed=5,
                          prepare=lambda m: _lift_class_bias(m, ["gfl_head_cls"]))


@pytest.fixture(scope="module")
def rtdetr_dir(tmp_path_factory):
    return export_in_repo("configs/rtdetrv2/rtdetrv2_tiny_coco_mini.yml",
                          str(tmp_path_factory.mktemp("rtdetr_eq") / "rtdetr"), seed=5,
                          prepare=lambda m: _lift_class_bias(m, ["score_head", "enc_score_head"]))


def _run(model_dir, paths, bs, policy):
    from ppdet_ext_deploy import Runner
    runner = Runner(model_dir, backend="paddle-cpu", backend_options={"threads": 2},
                    batch_size=bs, policy=policy)
    try:
        report = runner.run(paths)
    finally:
        runner.close()
    assert not report.errors
    return report


def _assert_same(ref, got):
    from ppdet_ext_deploy.compare import Tolerance, match_detections
    compared = 0
    for a, b in zip(ref.results, got.results):
        assert a.path == b.path
        assert len(a.dets) >= TOP, "too few detections for a meaningful comparison"
        threshold = float(np.sort(a.dets[:, 1])[::-1][TOP - 1])
        m = match_detections(a.dets, b.dets, Tolerance(min_score=threshold, score_tol=SCORE_TOL,
                                                       iou_min=IOU_MIN, margin=SCORE_TOL))
        assert m.ok, (a.path, m)
        compared += m.compared
    assert compared >= TOP * len(ref.results)


@pytest.mark.parametrize("policy", ["none", "orientation", "buckets"])
def test_gfl_batches_give_bs1_detections(gfl_dir, images, policy):
    ref = _run(gfl_dir, images, 1, "none")
    got = _run(gfl_dir, images, 4, policy)
    assert got.plan.waste_fraction > ref.plan.waste_fraction   # the batches did pad more
    _assert_same(ref, got)


@pytest.mark.parametrize("policy", ["none", "buckets"])
def test_rtdetr_batches_give_bs1_detections(rtdetr_dir, images, policy):
    ref = _run(rtdetr_dir, images, 1, "none")
    got = _run(rtdetr_dir, images, 4, policy)
    assert got.plan.waste_fraction == ref.plan.waste_fraction == 0.0   # fixed 160x160
    _assert_same(ref, got)
