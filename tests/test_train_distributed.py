"""Data-parallel training without GPUs: ``python -m paddle.distributed.launch
--nproc_per_node 2`` runs two CPU processes that all-reduce gradients over gloo (the
backend the launcher picks on a CPU build: ``PADDLE_DISTRI_BACKEND=gloo``).

One run, interrupted and resumed under the launcher, is checked against a single process
that trains on the union of both ranks' batches at every step (what averaged gradients
compute): the model has no batch-dependent layers here (BatchNorm on running statistics,
fixed input size), and GFL all-reduces its loss normalisers, so the two agree up to
float summation order. One exception, from ppdet's GFLHead: it clips the all-reduced
quality-weight sum to ``max(sum / world_size, 1)``, which equals the single-process
``max(sum, 1)`` only when ``sum >= world_size``; with the default ``prior_prob: 0.01`` the
initial class scores are ~0.01 and the regression branch gets up to ``world_size`` times
the single-process gradient. ``prior_prob: 0.5`` keeps the sum far above 2.
"""
import itertools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from train_helpers import (final_params, max_abs_diff, read_log, read_probe, run_dir,
                           run_train, write_train_config)

SEED = ["--seed", "11"]
# a constant LR: 8 steps move the weights ~3e-2, 3 orders above the tolerance (1e-5;
# measured 4.8e-7 on this machine)
EXTRA = """GFLHead: {prior_prob: 0.5}
LearningRate:
  base_lr: 0.001
  schedulers:
  - name: PiecewiseDecay
    milestones: [1000]
  - name: LinearWarmup
    steps: 1
    start_factor: 1.0
"""
IMAGES, BATCH, WORLD = 16, 2, 2   # 4 portrait + 12 landscape: 2 + 6 batches, 4 per rank
STEPS = 4


def _config(tmp):
    return write_train_config(tmp, epoch=2, batch_size=BATCH, sample_num=IMAGES,
                              fixed_size=True, freeze_norm=True, extra=EXTRA)


@pytest.fixture(scope="module")
def union_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("union")
    config = _config(tmp)
    p = run_train(config, tmp / "probe", *SEED, env={"PROBE_UNION_OF": str(WORLD)})
    assert p.returncode == 0, p.stderr[-3000:]
    return final_params(tmp / "probe")


def test_two_cpu_processes_sync_shard_write_once_and_resume(tmp_path, union_run):
    config = _config(tmp_path)
    run = run_dir(config)

    # 1. both ranks get SIGINT after their 3rd step: they agree to stop after the same
    #    step, rank 0 writes step_3, both exit 130
    p = run_train(config, tmp_path / "p1", *SEED, launch=WORLD, fault="step_end:3:sigint")
    assert p.returncode != 0
    first = [read_probe(tmp_path / "p1", r) for r in range(WORLD)]
    assert [r["exit"] for r in first] == [130, 130], p.stdout[-3000:]
    assert first[1]["writes"] == []                                  # rank 1 never writes
    assert any(w.endswith("step_3.pdparams.tmp" + w.rsplit("tmp", 1)[1])
               for w in first[0]["writes"])

    # 2. --resume auto under the launcher: both ranks load step_3 and finish
    p = run_train(config, tmp_path / "p2", "--resume", "auto", launch=WORLD)
    assert p.returncode == 0, p.stdout[-3000:]
    second = [read_probe(tmp_path / "p2", r) for r in range(WORLD)]
    assert second[1]["writes"] == [] and second[0]["writes"]

    # shards of the aspect-ratio sampler: same step count, disjoint, together complete
    epochs = {"0": [r["batches"]["0"] for r in first], "1": [r["batches"]["1"] for r in second]}
    for shards in epochs.values():
        assert [len(s) for s in shards] == [STEPS] * WORLD
        flat = [sorted(i for b in s for i in b) for s in shards]
        for a, b in itertools.combinations(flat, 2):
            assert not set(a) & set(b)
        assert sorted(i for s in flat for i in s) == list(range(IMAGES))
    assert epochs["0"] != epochs["1"]                                # reshuffled
    assert [r["batches"]["0"] for r in second] == [s[3:] for s in epochs["0"]]  # skip 3

    # gradients really averaged: ranks equal, and equal to one process on the union
    rank0, rank1 = (final_params(tmp_path / "p2", r) for r in range(WORLD))
    for k in rank0:
        assert np.array_equal(rank0[k], rank1[k]), k
    moved = max_abs_diff(rank0, final_params(tmp_path / "p2", 0, "init"))
    diff = max_abs_diff(rank0, union_run)
    print(f"weights moved {moved:.3g}; max |2 ranks - union| {diff:.3g}")
    assert moved > 1e-2
    assert diff < 1e-5

    log = read_log(run)                                              # rank 0 only, no dups
    assert [r["step"] for r in log] == list(range(2 * STEPS))


@pytest.mark.slow
def test_sigterm_to_the_launcher_checkpoints_every_rank_then_resume(tmp_path):
    """What a scheduler (or Ctrl-C) does to a launched job: the launcher forwards SIGTERM
    to every rank and waits for rank 0; the ranks finish the step, rank 0 writes
    ``step_G``, and ``--resume auto`` under the launcher finishes the run."""
    config = write_train_config(tmp_path, epoch=3, batch_size=BATCH, sample_num=IMAGES,
                                fixed_size=True, freeze_norm=True, extra=EXTRA)
    run = run_dir(config)
    proc = subprocess.Popen(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(WORLD),
         "--log_dir", str(tmp_path / "log1"), "tools/train.py", "-c", config, *SEED],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = os.path.join(run, "train_log.jsonl")
    while not (os.path.exists(log) and len(open(log).readlines()) >= 3):
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == signal.SIGTERM        # the launcher's own convention
    stopped = [line for r in range(WORLD)
               for line in open(tmp_path / "log1" / f"workerlog.{r}").read().splitlines()
               if line.startswith("stopped by SIGTERM")]
    assert len(stopped) == WORLD and len(set(stopped)) == 1   # same step on both ranks
    p = run_train(config, tmp_path / "p2", "--resume", "auto", launch=WORLD)
    assert p.returncode == 0, p.stdout[-3000:]
    assert [r["step"] for r in read_log(run)] == list(range(3 * STEPS))
