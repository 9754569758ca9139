"""Helpers for the training-fault and distributed tests: a tiny GFL config with random
augmentation, ``tools/train.py`` in a subprocess (through ``train_probe.py``, optionally
under ``paddle.distributed.launch``), and readers for what a run left behind."""
import json
import os
import subprocess
import sys

import numpy as np

from conftest import REPO

TINY = os.path.join(REPO, "configs", "gfl", "gfl_tiny_coco_mini.yml")
PROBE = os.path.join(REPO, "tests", "train_probe.py")


def write_train_config(tmp_path, *, epoch=3, batch_size=2, sample_num=8, fixed_size=False,
                       freeze_norm=False, extra=""):
    """Tiny GFL (ResNet18-vd, 64-ch head) at 128x192 on ``sample_num`` coco_mini images, with
    RandomFlip (so augmentation randomness is exercised), shuffled aspect-grouped batches
    and drop_last (gfl_reader defaults). ``fixed_size``: resize without keeping the ratio
    (every batch the same shape); ``freeze_norm``: BatchNorm on running statistics (a
    sample's output does not depend on the rest of its batch)."""
    keep = "false" if fixed_size else "true"
    text = f"""_BASE_: ['{TINY}']
save_dir: {tmp_path}/runs
epoch: {epoch}
log_iter: 1
snapshot_epoch: 1
worker_num: 0
ResNet: {{freeze_norm: {str(freeze_norm).lower()}}}
TrainDataset:
  sample_num: {sample_num}
TrainReader:
  sample_transforms:
  - Decode: {{}}
  - RandomFlip: {{prob: 0.5}}
  - Resize: {{target_size: [128, 192], keep_ratio: {keep}, interp: 1}}
  - NormalizeImage: {{is_scale: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}
  - Permute: {{}}
  batch_size: {batch_size}
{extra}"""
    path = tmp_path / "train_test.yml"
    path.write_text(text)
    return str(path)


def run_dir(config):
    """Run dir of a config written by ``write_train_config``."""
    return os.path.join(os.path.dirname(config), "runs", "train_test")


def run_train(config, probe_dir, *args, fault=None, launch=0, env=None, timeout=600):
    """``tools/train.py -c config args`` through the probe; returns CompletedProcess.

    Args:
        fault: ``PPDET_EXT_FAULT`` spec (ppdet_ext.engine.faults), e.g. ``"step_end:4:sigint"``.
        launch: number of processes for ``paddle.distributed.launch`` (0: plain process).
    """
    env = {**os.environ, **(env or {})}
    env.pop("PPDET_EXT_FAULT", None)
    if fault:
        env["PPDET_EXT_FAULT"] = fault
    cmd = [sys.executable]
    if launch:
        cmd += ["-m", "paddle.distributed.launch", "--nproc_per_node", str(launch),
                "--log_dir", os.path.join(str(probe_dir), "launch_log")]
    watch = os.path.join(os.path.dirname(config), "runs")
    cmd += [PROBE, str(probe_dir), watch, "--", "-c", config, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def read_log(run):
    with open(os.path.join(run, "train_log.jsonl")) as f:
        return [json.loads(line) for line in f]


def read_probe(probe_dir, rank=0):
    with open(os.path.join(str(probe_dir), f"rank{rank}.json")) as f:
        return json.load(f)


def final_params(probe_dir, rank=0, which="final"):
    data = np.load(os.path.join(str(probe_dir), f"rank{rank}_params.npz"))
    prefix = which + "/"
    return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}


def checkpoint_params(run, name="model_final"):
    import paddle
    return {k: v.numpy() for k, v in paddle.load(os.path.join(run, name + ".pdparams")).items()}


def max_abs_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


def stderr_lines(proc):
    """stderr without Paddle's glog lines (``I1207 ...``/``W1207 ...``)."""
    return [line for line in proc.stderr.splitlines()
            if line.strip() and not (line[:1] in "IWE" and line[1:5].isdigit())]
