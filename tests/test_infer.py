"""tools/infer.py path: boxes drawn, bad files reported by name, others processed."""
import json
import os
import subprocess

import pytest

from bad_images import make_bad_images
from conftest import COCO_MINI, PYTHON, REPO
from gfl_helpers import save_random_weights, write_test_config
from ppdet_ext_deploy.imageio import list_images

GOOD = list_images(os.path.join(COCO_MINI, "images"), 1)[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random-init tiny GFL weights (no training needed to test the plumbing)."""
    os.chdir(REPO)
    tmp = tmp_path_factory.mktemp("w")
    cfg_path = write_test_config(tmp)
    return cfg_path, save_random_weights(cfg_path, str(tmp / "random"))


def test_infer_cli_with_bad_inputs(weights, tmp_path):
    cfg_path, w = weights
    src = tmp_path / "in"
    readable, unreadable = make_bad_images(src, GOOD)
    out = tmp_path / "out"
    r = subprocess.run([PYTHON, "tools/infer.py", "-c", cfg_path, "-o", f"weights={w}",
                        "--infer_dir", str(src), "--infer_img", str(src / "missing.jpg"),
                        "--output_dir", str(out), "--draw_threshold", "0.0"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 1, r.stderr[-3000:]           # some inputs were skipped
    for name in unreadable:
        assert name in r.stderr
    res = json.loads((out / "results.json").read_text())
    assert sorted(os.path.basename(x["file"]) for x in res["results"]) == sorted(readable)
    assert sorted(os.path.basename(x["file"]) for x in res["errors"]) == sorted(unreadable)
    for item in res["results"]:
        assert os.path.getsize(item["output"]) > 0
        for det in item["detections"]:
            assert len(det["bbox_xyxy"]) == 4 and 0.0 <= det["score"] <= 1.0
