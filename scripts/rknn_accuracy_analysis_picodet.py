"""rknn accuracy_analysis of the plain int8 PicoDet-S build (run under .venv-rknn).

Usage (repo root): PYTHONPATH=. .venv-rknn/bin/python \
    scripts/rknn_accuracy_analysis_picodet.py INPUT.npy
where INPUT.npy is one preprocessed [1, 3, 416, 416] image (the run recorded in
picodet_s_416_int8_accuracy_analysis.txt used coco_val158's 000000000139.jpg, preprocessed by
deploy/preprocess.py). Writes output/rknn/picodet_s_416_int8_accuracy_analysis/snapshot/.

Calibration: output/rknn/picodet_s_416_int8/calib/dataset.txt (the 100 coco_bench600 images
of the int8 build); analysed input: the first coco_val158 image, preprocessed like the runner.
"""
import os
import sys

from rknn.api import RKNN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(REPO, "output", "rknn", "picodet_s_416_int8_accuracy_analysis")
os.makedirs(HERE, exist_ok=True)
os.chdir(HERE)
r = RKNN(verbose=False)
r.config(target_platform="rk3588")
assert r.load_onnx(os.path.join(REPO, "output/onnx_rknn/picodet_s_416_b1/model.onnx"),
                   inputs=["image"], input_size_list=[[1, 3, 416, 416]]) == 0
assert r.build(do_quantization=True,
               dataset=os.path.join(REPO, "output/rknn/picodet_s_416_int8/calib/dataset.txt")) == 0
ret = r.accuracy_analysis(inputs=[sys.argv[1]], output_dir=os.path.join(HERE, "snapshot"),
                          target=None)
print("accuracy_analysis", ret)
r.release()
