"""The batch-size sweep API and CLI (deploy/benchmark.py, tools/sweep.py) on the tiny fixture,
plus (slow, needs ../shared/data) the real PicoDet-S check against its known COCO AP."""
import csv
import json
import os

import pytest

import ppdet_ext_deploy  # noqa: F401
from ppdet_ext_deploy.benchmark import run_sweep
from ppdet_ext_deploy.sweep_report import format_table, ratios, write_all
from deploy_fixtures import COCO_MINI, PICODET_ONNX, build_picodet_onnx_export, build_tiny_export

ANN = os.path.join(COCO_MINI, "annotations", "instances_val.json")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return build_tiny_export(str(tmp_path_factory.mktemp("tinys") / "export"))


def test_run_sweep_rows_and_files(export_dir, tmp_path):
    from ppdet_ext_deploy.imageio import annotated_images

    images = annotated_images(ANN, os.path.join(COCO_MINI, "images"))[:10]
    result = run_sweep(export_dir, images, batch_sizes=(1, 4), policies=("none", "shape"),
                       backend_options={"paddle-cpu": {"threads": 1}}, eval_ann=ANN,
                       eval_images=images)
    rows = result["rows"]
    assert [(r["policy"], r["batch_size"]) for r in rows] == [("none", 1), ("shape", 1), ("none", 4), ("shape", 4)]
    for r in rows:
        assert r["images_ok"] == 10 and r["images_per_s"] > 0 and r["rss_peak_mb"] > 0
        assert r["match_unmatched"] == 0  # same detections as none/bs=1
        assert 0 <= r["waste_pct"] < 100
        for k in ("batch_latency_p50_ms", "batch_latency_p99_ms", "image_latency_p90_ms"):
            assert r[k] > 0
        assert "AP" in r
    assert len({r["AP"] for r in rows}) == 1  # nothing changed across configurations
    env = result["env"]
    for k in ("paddle", "onnxruntime", "numpy", "cv2", "cpu_count", "python", "time_utc_end"):
        assert k in env
    if os.path.isfile("/proc/cpuinfo"):  # the ISA a timing depends on is recorded
        assert "cpu_model" in env and isinstance(env["cpu_isa"], list)
    for r in rows:
        assert r["images_per_s_min"] <= r["images_per_s"] <= r["images_per_s_max"]
    assert set(ratios(rows, 4)) == {"paddle-cpu/shape"}
    paths = write_all(str(tmp_path / "sweep"), result, "test")
    with open(paths["csv"]) as f:
        assert len(list(csv.DictReader(f))) == 4
    assert json.load(open(paths["json"]))["rows"][0]["policy"] == "none"
    assert os.path.getsize(paths["png"]) > 1000
    assert "images_per_s" in format_table(rows)


def test_cli_writes_outputs(export_dir, tmp_path, capsys):
    from tools.sweep import main

    out = str(tmp_path / "cli")
    rc = main(["--model", export_dir, "--images", os.path.join(COCO_MINI, "images"), "--limit", "6",
               "--batch-sizes", "1", "2", "--policies", "none", "buckets", "--threads", "1",
               "--no-progress", "--out", out])
    assert rc == 0
    for ext in ("csv", "json", "png"):
        assert os.path.isfile(f"{out}.{ext}")
    data = json.load(open(f"{out}.json"))
    assert data["command"].startswith("python tools/sweep.py --model")
    assert "images_per_s" in capsys.readouterr().out


@pytest.mark.slow
def test_real_picodet_onnx_reaches_known_ap(tmp_path, shared_data):
    """Decode + NMS + COCO eval reproduce the known AP 0.335 of PicoDet-S 416 on coco_val158."""
    from ppdet_ext_deploy.coco_eval import coco_ap
    from ppdet_ext_deploy.imageio import annotated_images
    from ppdet_ext_deploy.runner import Runner

    if not os.path.isfile(PICODET_ONNX):
        pytest.skip(f"{PICODET_ONNX} not found")
    d = build_picodet_onnx_export(str(tmp_path / "pico"))
    ann = os.path.join(shared_data, "coco_val158", "annotations", "instances_val158.json")
    paths = annotated_images(ann)
    rep = Runner(d, backend="onnxruntime", batch_size=4, policy="buckets").run(paths)
    assert rep.errors == []
    ap = coco_ap(rep.results, ann)["AP"]
    assert ap == pytest.approx(0.335, abs=0.002)


def test_plan_only_needs_no_model_run(export_dir, tmp_path):
    from tools.sweep import main

    out = str(tmp_path / "plan")
    assert main(["--plan-only", "--model", export_dir, "--images", os.path.join(COCO_MINI, "images"),
                 "--batch-sizes", "1", "8", "--out", out]) == 0
    rows = json.load(open(f"{out}.json"))["rows"]
    by = {(r["policy"], r["batch_size"]): r["waste_pct"] for r in rows}
    assert by[("none", 1)] == by[("shape", 8)]  # shape pads like bs=1
    assert by[("buckets", 8)] < by[("none", 8)]


def test_infer_deploy_cli(export_dir, tmp_path):
    from deploy_fixtures import coco_mini_images, write_bad_images
    from tools.infer_deploy import main

    bad = write_bad_images(str(tmp_path / "bad"))
    out = str(tmp_path / "dets.json")
    args = ["--model", export_dir, "--images", *coco_mini_images(3), bad["corrupt"], "--batch-size", "2",
            "--threads", "1", "--out", out]
    assert main(args) == 0
    recs = json.load(open(out))
    assert [r["file"] for r in recs][-1] == bad["corrupt"] and recs[-1]["error"]
    assert all(r["error"] is None for r in recs[:3]) and any(r["detections"] for r in recs[:3])
    assert main(args + ["--strict"]) == 1


def test_compare_batches_cli(export_dir, tmp_path):
    import shutil
    from deploy_fixtures import coco_mini_images, write_bad_images
    from tools.compare_batches import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in coco_mini_images(6):
        shutil.copy(p, folder)
    out = str(tmp_path / "match.json")
    args = ["--model", export_dir, "--images", str(folder), "--batch-size", "4",
            "--policies", "none", "buckets", "--threads", "1", "--min-score", "0.5", "--out", out]
    assert main(args) == 0
    rows = json.load(open(out))
    assert [r["policy"] for r in rows] == ["none", "buckets"]
    for r in rows:
        assert r["images"] == 6 and r["compared"] > 0 and r["unmatched"] == 0
    shutil.copy(write_bad_images(str(tmp_path / "bad"))["corrupt"], folder / "zz_corrupt.jpg")
    assert main(args) == 1                      # a file that failed is not "same results"
