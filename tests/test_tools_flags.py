"""ppdet's flags on our training-side tools, with ppdet's meanings, and nothing written to
the current directory: --classwise, --json_eval, --save_results, --visualize, --use_vdl,
--output_dir defaults; switches spelled ppdet's way; unsupported flags are errors."""
import json
import os
import runpy
import subprocess

import numpy as np
import pytest

from conftest import COCO_MINI, PYTHON, REPO
from gfl_helpers import save_random_weights, write_test_config
from ppdet_ext.engine import cli

ANN = os.path.join(COCO_MINI, "annotations", "instances_val.json")
DATA = [f"{k}.dataset_dir={COCO_MINI}" for k in ("TrainDataset", "EvalDataset", "TestDataset")]
# random-init GFL scores are ~0.015-0.02, under the config's NMS score threshold
NMS_ALL = "GFLHead.nms.score_threshold=0.0"


def test_switches_take_ppdets_spellings():
    p = cli.parser("t", ["python tools/x.py"], unsupported={"--fleet": "no fleet here"})
    cli.add_switch(p, "--use_vdl", "h")
    p.add_argument("--draw_threshold", type=float, default=0.5)
    for argv, want in ((["--use_vdl"], True), (["--use_vdl", "True"], True),
                       (["--use_vdl=false"], False), (["--use-vdl", "0"], False), ([], False)):
        assert p.parse_args(["-c", "x"] + argv).use_vdl is want, argv
    assert p.parse_args(["-c", "x", "--draw-threshold=0.3"]).draw_threshold == 0.3
    assert p.parse_args(["-c", "x", "--slim_config", "s.yml"]).slim_config == "s.yml"


@pytest.mark.parametrize("argv, msg", [
    (["--use_vdl", "maybe"], "argument --use_vdl: expected true or false, got 'maybe'"),
    (["--fleet"], "--fleet is not supported: no fleet here"),
    (["--fleet", "True"], "--fleet is not supported: no fleet here"),
])
def test_bad_and_unsupported_flags_exit_2_with_a_message(capsys, argv, msg):
    p = cli.parser("t", ["python tools/x.py"], unsupported={"--fleet": "no fleet here"})
    cli.add_switch(p, "--use_vdl", "h")
    with pytest.raises(SystemExit) as e:
        p.parse_args(["-c", "x"] + argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.parametrize("tool, flag", [("train.py", "--to_static"), ("eval.py", "--slice_infer"),
                                        ("infer.py", "--use_vdl"),
                                        ("export_model.py", "--export_serving_model")])
def test_tools_refuse_unsupported_ppdet_flags(capsys, tool, flag):
    main = runpy.run_path(os.path.join(REPO, "tools", tool), run_name="tool")["main"]
    with pytest.raises(SystemExit) as e:
        main(["-c", "x.yml", flag, "True"])
    assert e.value.code == 2 and f"{flag} is not supported: " in capsys.readouterr().err


def test_per_class_ap_of_known_detections(tmp_path):
    """Ground-truth boxes of two categories submitted as detections: their AP is 1, every
    other category's 0 (NaN without ground truth), and the COCO AP is the mean."""
    from ppdet_ext.engine import coco_json_eval
    with open(ANN) as f:
        gt = json.load(f)
    cats = sorted({a["category_id"] for a in gt["annotations"]})[:2]
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in gt["annotations"] if a["category_id"] in cats]
    path = tmp_path / "bbox.json"
    path.write_text(json.dumps(dets))
    ev = coco_json_eval.coco_eval(ANN, str(path))
    rows, text = coco_json_eval.write_classwise(ev, str(tmp_path / "out"))
    ap = {r["category_id"]: r["AP"] for r in rows}
    with_gt = {a["category_id"] for a in gt["annotations"]}
    assert all(ap[c] == pytest.approx(1.0) for c in cats)
    assert all(ap[c] == 0.0 for c in with_gt - set(cats))
    assert all(np.isnan(ap[c]) for c in set(ap) - with_gt)
    assert coco_json_eval.stats(ev)["AP"] == pytest.approx(np.nanmean(list(ap.values())))
    assert len(rows) == len(gt["categories"]) and text.split()[:3] == ["category", "|", "AP"]
    saved = json.loads((tmp_path / "out" / "classwise_ap.json").read_text())
    assert [r["category_id"] for r in saved] == [r["category_id"] for r in rows]
    curves = os.listdir(tmp_path / "out" / "bbox_pr_curve")
    assert len(curves) == len(rows) and all(c.endswith("_precision_recall_curve.jpg") for c in curves)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny GFL config + random-init weights, and an empty folder to run the tools in."""
    tmp = tmp_path_factory.mktemp("flags")
    cfg_path = write_test_config(tmp, sample_num=2, epoch=1)
    weights = save_random_weights(cfg_path, str(tmp / "random"), overrides=DATA)
    cwd = tmp / "cwd"
    cwd.mkdir()
    return cfg_path, weights, tmp, cwd


def _run(tool, cfg_path, cwd, *args, opts=()):
    r = subprocess.run([PYTHON, os.path.join(REPO, "tools", tool), "-c", cfg_path, *args,
                        "-o", *DATA, NMS_ALL, *opts], capture_output=True, text=True, timeout=900, cwd=cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_train_use_vdl_writes_under_the_run_dir_only(tiny):
    cfg_path, _, tmp, cwd = tiny
    _run("train.py", cfg_path, cwd, "--use_vdl", "True", "--save_prediction_only",
         opts=["TrainReader.batch_size=2"])
    run = tmp / "runs" / "gfl_test"
    assert [f for f in os.listdir(run / "vdl") if f.startswith("vdlrecords")]
    assert os.listdir(cwd) == []


def test_eval_classwise_and_json_eval_write_under_output_eval(tiny):
    cfg_path, weights, tmp, cwd = tiny
    out = tmp / "runs" / "gfl_test" / "eval"
    r = _run("eval.py", cfg_path, cwd, "--classwise", opts=[f"weights={weights}"])
    assert "per-category bbox AP" in r.stdout + r.stderr and "toothbrush" in r.stdout + r.stderr
    for name in ("bbox.json", "metrics.json", "classwise_ap.txt", "classwise_ap.json"):
        assert (out / name).is_file(), name
    assert len(os.listdir(out / "bbox_pr_curve")) == len(json.loads((out / "classwise_ap.json").read_text()))
    assert os.listdir(cwd) == []
    first = json.loads((out / "metrics.json").read_text())["metrics"]["bbox"]
    _run("eval.py", cfg_path, cwd, "--json_eval")  # re-scores bbox.json without the model
    again = json.loads((out / "metrics.json").read_text())
    assert again["weights"].endswith("bbox.json")
    assert again["metrics"]["bbox"] == pytest.approx(first)
    assert os.listdir(cwd) == []


def test_infer_save_results_writes_coco_bbox_json(tiny):
    from pycocotools.coco import COCO
    cfg_path, weights, tmp, cwd = tiny
    images = sorted(os.listdir(os.path.join(COCO_MINI, "images")))[:2]
    _run("infer.py", cfg_path, cwd, "--infer_img", *[os.path.join(COCO_MINI, "images", i) for i in images],
         "--save_results", "--visualize", "False", "--draw_threshold", "0.016",
         opts=[f"weights={weights}"])
    out = tmp / "runs" / "gfl_test" / "infer"           # default: <run dir>/infer
    assert sorted(os.listdir(out)) == ["bbox.json", "results.json"]   # --visualize False
    dets = json.loads((out / "bbox.json").read_text())
    gt = COCO(ANN)
    ids = {im["file_name"]: im["id"] for im in gt.dataset["images"]}
    assert dets and {d["image_id"] for d in dets} <= {ids[i] for i in images}
    assert {d["category_id"] for d in dets} <= set(gt.getCatIds())
    gt.loadRes(dets)                                      # pycocotools accepts the file
    shown = json.loads((out / "results.json").read_text())["results"]
    drawn = sorted((d["category_id"], round(d["score"], 6)) for item in shown
                   for d in item["detections"])
    kept = sorted((d["category_id"], round(d["score"], 6)) for d in dets if d["score"] >= 0.016)
    assert drawn == kept and 0 < len(kept) < len(dets)    # results.json: the thresholded part
    x1, y1, x2, y2 = shown[0]["detections"][0]["bbox_xyxy"]
    assert any(d["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1]) for d in dets)
    assert os.listdir(cwd) == []


def test_export_defaults_to_output_inference_config_name(tiny):
    cfg_path, weights, _, cwd = tiny
    r = _run("export_model.py", cfg_path, cwd, opts=[f"weights={weights}"])
    out = cwd / "output_inference" / "gfl_test"
    assert (out / "infer_cfg.yml").is_file() and (out / "model.pdmodel").is_file()
    assert "outputs: output_inference/gfl_test" in r.stdout
    assert os.listdir(cwd) == ["output_inference"]
