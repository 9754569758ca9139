"""tools/eval.py on real COCO-trained weights reproduces the reference AP."""
import json
import os
import subprocess

import pytest

from conftest import PYTHON, REPO


@pytest.mark.needs_shared
def test_picodet_eval_reproduces_reference_ap(shared_data, tmp_path):
    onnx = os.path.join(shared_data, "models", "picodet_s_416_coco.onnx")
    cfg = "configs/picodet/picodet_s_416_coco_ext.yml"
    weights = str(tmp_path / "picodet_s_416")
    subprocess.run([PYTHON, "tools/convert_picodet_onnx.py", "--onnx", onnx, "--config", cfg,
                    "--out", weights + ".pdparams"], check=True, cwd=REPO,
                   capture_output=True, timeout=600)
    out = tmp_path / "metrics.json"
    r = subprocess.run([PYTHON, "tools/eval.py", "-c", cfg, "-o", f"weights={weights}",
                        f"save_dir={tmp_path}", "--output_json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    saved = json.loads(out.read_text())
    # reference: AP 0.335 on coco_val158 with plain 416 resize (../shared/data/README.md)
    assert saved["metrics"]["bbox"]["AP"] == pytest.approx(0.335, abs=0.002)
    assert "bbox: AP=0.33" in r.stdout
