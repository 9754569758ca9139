"""GFL through our trainer: loss falls, checkpoints, resume, eval JSON, VisualDL logs."""
import json
import os

import numpy as np
import pytest

from gfl_helpers import write_test_config
from ppdet_ext.engine import api
from ppdet_ext.engine.checkpoint import find_resume_checkpoint
from ppdet_ext.engine.config import load_config


def _log(run_dir):
    with open(os.path.join(run_dir, "train_log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """2 epochs x 2 steps on 8 images, with VisualDL on and eval each epoch."""
    from conftest import REPO
    from ppdet_ext.registry import reset_global_config
    os.chdir(REPO)
    tmp = tmp_path_factory.mktemp("gfl")
    reset_global_config()
    cfg, user = load_config(write_test_config(tmp), ["TrainReader.aspect_grouping={ratio_bins: [1.0]}"])
    api.train(cfg, user, validate=True, use_vdl=True, seed=0)
    run_dir = api.run_dir(cfg)
    reset_global_config()
    return tmp, run_dir


def test_run_dir_has_config_checkpoints_logs(trained):
    _, run_dir = trained
    files = set(os.listdir(run_dir))
    assert {"config.yml", "0.pdparams", "0.pdopt", "model_final.pdparams",
            "model_final.pdopt", "train_log.jsonl", "vdl"} <= files
    assert not [f for f in files if ".tmp" in f]          # atomic writes left no temp files
    assert any(f.startswith("vdlrecords") for f in os.listdir(os.path.join(run_dir, "vdl")))
    merged = open(os.path.join(run_dir, "config.yml")).read()
    assert "_BASE_" not in merged and "GFLHead" in merged and "aspect_grouping" in merged


def test_global_steps_and_lr_logged(trained):
    _, run_dir = trained
    log = _log(run_dir)
    assert [r["step"] for r in log] == list(range(len(log)))
    assert all(np.isfinite(r["loss"]) for r in log)
    assert log[1]["lr"] > log[0]["lr"]                     # linear warmup


def test_resume_continues_same_steps_lr_and_batches(trained, tmp_path, repo_cwd):
    _, run_dir = trained
    full = _log(run_dir)
    cfg, user = load_config(write_test_config(tmp_path),
                            ["TrainReader.aspect_grouping={ratio_bins: [1.0]}"])
    api.train(cfg, user, resume=os.path.join(run_dir, "0"), seed=0)
    resumed = _log(api.run_dir(cfg))
    tail = [r for r in full if r["epoch"] == 1]
    assert [r["step"] for r in resumed] == [r["step"] for r in tail]
    assert [r["lr"] for r in resumed] == pytest.approx([r["lr"] for r in tail], rel=1e-6)
    # same weights, optimizer state, batches and per-step seeds -> the same losses, exactly
    assert [r["loss"] for r in resumed] == [r["loss"] for r in tail]


def test_resume_auto_finds_newest_checkpoint(trained):
    _, run_dir = trained
    assert find_resume_checkpoint(run_dir).endswith("model_final")
    os.makedirs(os.path.join(run_dir, "partial"), exist_ok=True)


def test_eval_writes_metrics_json(trained, repo_cwd, tmp_path):
    tmp, run_dir = trained
    # score threshold 0 so the barely trained model yields detections and COCO eval runs
    cfg, user = load_config(write_test_config(tmp), ["GFLHead.nms.score_threshold=0.0"])
    out = tmp_path / "metrics.json"
    metrics = api.evaluate(cfg, user, weights=os.path.join(run_dir, "model_final"),
                           output_json=str(out))
    saved = json.loads(out.read_text())
    assert saved["note"] is None                      # really scored, not the empty fallback
    assert set(saved["metrics"]["bbox"]) >= {"AP", "AP50", "AR100"}
    assert saved["metrics"] == metrics
    assert 0.0 <= metrics["bbox"]["AP"] <= 1.0


def test_loss_falls_when_overfitting_a_batch(tmp_path, repo_cwd):
    cfg, user = load_config(write_test_config(tmp_path, sample_num=4, epoch=30),
                            ["LearningRate.schedulers=[{name: PiecewiseDecay, milestones: [1000]}, "
                             "{name: LinearWarmup, steps: 5, start_factor: 0.2}]",
                             "snapshot_epoch=100"])
    api.train(cfg, user, seed=0)
    losses = [r["loss"] for r in _log(api.run_dir(cfg))]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
