"""Every shipped GFL config builds ppdet's GFL and runs a forward pass."""
import os

import numpy as np
import paddle
import pytest

from conftest import REPO
from ppdet_ext.engine.config import load_config
from ppdet_ext.export import adapters, build_model

# parameter counts (millions, BN statistics included as Paddle lists them) of the models
# these configs build for 80 classes, pinned +-1% so an unintended change shows up.
# Measured: r18vd 19.46, r34vd 29.57, r50 32.50, tiny 11.69.
EXPECTED_PARAMS_M = {
    "gfl_r18vd_1x_coco": (19.26, 19.65),
    "gfl_r34vd_1x_coco": (29.27, 29.87),
    "gfl_r50_fpn_1x_coco": (32.17, 32.82),
    "gfl_tiny_coco_mini": (11.57, 11.80),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS_M))
def test_gfl_config_builds_and_runs(name, repo_cwd):
    cfg, _ = load_config(os.path.join(REPO, "configs", "gfl", f"{name}.yml"))
    paddle.seed(0)
    model = build_model(cfg)
    n = sum(int(np.prod(p.shape)) for p in model.parameters()) / 1e6
    lo, hi = EXPECTED_PARAMS_M[name]
    assert lo <= n <= hi, f"{name}: {n:.2f}M params"
    with paddle.no_grad():
        scores, boxes = adapters.raw_outputs(model, paddle.rand([1, 3, 128, 96]))
    assert scores.shape[0] == 1 and scores.shape[2] == 80 and boxes.shape[2] == 4
    assert np.isfinite(boxes.numpy()).all()
