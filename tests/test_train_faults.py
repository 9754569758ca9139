"""Training killed or interrupted at any point and resumed with ``--resume auto`` ends
exactly where the uninterrupted run does: same batches, LR, global steps, losses, and
bit-identical weights (CPU). Real processes, real SIGKILL / SIGINT (injected at named
points through ``PPDET_EXT_FAULT``), tiny GFL with random flips at 128x192."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ppdet_ext.engine.checkpoint import find_resume_checkpoint
from train_helpers import (checkpoint_params, read_log, read_probe, run_dir,
                           run_train, stderr_lines, write_train_config)

SEED = ["--seed", "7"]
EMA = "use_ema: true\nema_decay: 0.9\n"
STEPS_PER_EPOCH = 3  # 8 images, 3 portrait + 5 landscape, batch 2, drop_last
EPOCHS = 3


def _reference(tmp_path_factory, name, extra=""):
    tmp = tmp_path_factory.mktemp(name)
    config = write_train_config(tmp, epoch=EPOCHS, extra=extra)
    proc = run_train(config, tmp / "probe", *SEED)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dir(config)
    return {"run": run, "log": read_log(run), "params": checkpoint_params(run),
            "batches": read_probe(tmp / "probe")["batches"]}


@pytest.fixture(scope="module")
def reference_ema(tmp_path_factory):
    return _reference(tmp_path_factory, "ref_ema", EMA)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _reference(tmp_path_factory, "ref")


def _assert_same_run(run, ref):
    log = read_log(run)
    assert [r["step"] for r in log] == list(range(EPOCHS * STEPS_PER_EPOCH))  # once each
    assert [r["step"] for r in log] == [r["step"] for r in ref["log"]]
    assert [r["lr"] for r in log] == [r["lr"] for r in ref["log"]]
    assert [r["loss"] for r in log] == [r["loss"] for r in ref["log"]]
    params = checkpoint_params(run)
    assert params.keys() == ref["params"].keys()
    for k, v in params.items():
        assert np.array_equal(v, ref["params"][k]), k                   # bit-identical
    assert not [f for f in os.listdir(run) if ".tmp" in f]


def _temp_files(run):
    return [f for f in os.listdir(run) if ".tmp" in f] if os.path.isdir(run) else []


def test_reference_epochs_reshuffle(reference_ema):
    batches = reference_ema["batches"]
    assert sorted(batches) == [str(e) for e in range(EPOCHS)]
    assert all(len(b) == STEPS_PER_EPOCH for b in batches.values())
    assert batches["0"] != batches["1"] != batches["2"]


def test_killed_and_interrupted_run_resumes_bit_identical(reference_ema, tmp_path):
    """One run, five processes: SIGKILL mid-checkpoint-write, Ctrl-C mid-epoch,
    SIGKILL just after a checkpoint, SIGKILL mid-step, then to the end (EMA on)."""
    config = write_train_config(tmp_path, epoch=EPOCHS, extra=EMA)
    run = run_dir(config)

    # 1. killed while writing checkpoint 0's second file: no complete checkpoint
    p = run_train(config, tmp_path / "p1", *SEED, fault="checkpoint_file:2:kill")
    assert p.returncode == -signal.SIGKILL
    assert _temp_files(run) and find_resume_checkpoint(run) is None

    # 2. starts afresh; Ctrl-C after global step 5 (epoch 1, 2 of its 3 steps)
    p = run_train(config, tmp_path / "p2", "--resume", "auto", *SEED,
                  fault="step_end:5:sigint")
    assert p.returncode == 130
    lines = stderr_lines(p)
    assert lines == [f"stopped by SIGINT at epoch 1 step 2: checkpoint {run}/step_5; "
                     f"continue with --resume auto"], p.stderr[-3000:]
    assert not _temp_files(run)                      # the killed write's temp file is gone
    assert find_resume_checkpoint(run) == os.path.join(run, "step_5")

    # 3. resumes mid-epoch (skips exactly the 2 batches done); killed right after
    #    checkpoint 1 is complete
    p = run_train(config, tmp_path / "p3", "--resume", "auto", fault="checkpoint_done:1:kill")
    assert p.returncode == -signal.SIGKILL
    assert read_probe_safe(tmp_path / "p3") is None  # killed: the probe never finished
    assert find_resume_checkpoint(run) == os.path.join(run, "1")

    # 4. killed mid-step (its 2nd batch loaded, not yet applied)
    p = run_train(config, tmp_path / "p4", "--resume", "auto", fault="step_begin:2:kill")
    assert p.returncode == -signal.SIGKILL

    # 5. to the end; the seed comes from the checkpoint
    p = run_train(config, tmp_path / "p5", "--resume", "auto")
    assert p.returncode == 0, p.stderr[-3000:]
    assert read_probe(tmp_path / "p5")["batches"] == {"2": reference_ema["batches"]["2"]}
    _assert_same_run(run, reference_ema)
    assert sorted(f for f in os.listdir(run) if not f.startswith(("config", "train_log"))) == \
        sorted(f"{n}.{s}" for n in ("0", "1", "model_final")
               for s in ("pdparams", "pdopt", "pdema", "state.json"))  # step_5 pruned


def test_missing_resume_checkpoint_is_a_usage_error(tmp_path, repo_cwd, capsys):
    import runpy
    from conftest import REPO
    main = runpy.run_path(os.path.join(REPO, "tools", "train.py"))["main"]
    config = write_train_config(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["-c", config, "--resume", str(tmp_path / "nope.pdparams")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no checkpoint {tmp_path}/nope.pdparams (give a checkpoint path "
                   f"like output/<config>/3, or --resume auto)"]


def read_probe_safe(probe_dir):
    try:
        return read_probe(probe_dir)
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_mid_epoch_resume_skips_exactly_the_done_batches(reference, tmp_path):
    config = write_train_config(tmp_path, epoch=EPOCHS)
    run = run_dir(config)
    p = run_train(config, tmp_path / "p1", *SEED, fault="step_end:4:sigint")
    assert p.returncode == 130 and read_probe(tmp_path / "p1")["exit"] == 130
    p = run_train(config, tmp_path / "p2", "--resume", "auto")
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = read_probe(tmp_path / "p2")["batches"]
    assert resumed["1"] == reference["batches"]["1"][1:]   # 4 = epoch 1 after 1 batch
    assert resumed["2"] == reference["batches"]["2"]
    _assert_same_run(run, reference)


def test_disk_full_keeps_earlier_checkpoints(tmp_path):
    config = write_train_config(tmp_path, epoch=EPOCHS)
    run = run_dir(config)
    # checkpoint 0 is three files; the 4th file write (1.pdopt) hits a full disk
    p = run_train(config, tmp_path / "p1", *SEED, fault="checkpoint_file:4:enospc")
    assert p.returncode == 1
    assert stderr_lines(p) == [f"error: cannot write {run}/1.pdopt: No space left on device "
                               f"(earlier checkpoints are intact)"], p.stderr[-3000:]
    assert not _temp_files(run) and not os.path.exists(os.path.join(run, "1.pdparams"))
    assert find_resume_checkpoint(run) == os.path.join(run, "0")
    assert checkpoint_params(run, "0")  # intact: loads


# -- the exhaustive matrix (slow) -------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("fault", [
    "step_begin:1:kill", "step_begin:5:kill", "step_end:3:kill", "step_end:7:kill",
    "checkpoint_file:1:kill", "checkpoint_file:3:kill", "checkpoint_file:5:kill",
    "checkpoint_done:1:kill", "checkpoint_done:2:kill", "step_end:1:sigint",
    "step_end:3:sigterm", "step_end:9:sigint",
    "step_begin:5:sigint,checkpoint_file:4:sigint",   # a second Ctrl-C mid-write
])
def test_kill_point_matrix(reference, tmp_path, fault):
    config = write_train_config(tmp_path, epoch=EPOCHS)
    p = run_train(config, tmp_path / "p1", *SEED, fault=fault)
    expected = {"kill": -signal.SIGKILL, "sigint": 130, "sigterm": 143}[fault.split(":")[-1]]
    assert p.returncode == expected, p.stderr[-3000:]
    if expected > 0:
        assert len(stderr_lines(p)) == 1, p.stderr[-3000:]
    # the same command again (a kill before the first checkpoint leaves nothing to resume)
    p = run_train(config, tmp_path / "p2", "--resume", "auto", *SEED)
    assert p.returncode == 0, p.stderr[-3000:]
    _assert_same_run(run_dir(config), reference)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.3, 1.1, 2.3])
def test_external_sigkill_at_a_random_moment(reference, tmp_path, delay):
    """SIGKILL from outside, ``delay`` s after the 2nd logged step: lands wherever it lands
    (forward, backward, optimizer update, checkpoint write)."""
    config = write_train_config(tmp_path, epoch=EPOCHS)
    run = run_dir(config)
    from train_helpers import PROBE
    from conftest import REPO
    proc = subprocess.Popen([sys.executable, PROBE, str(tmp_path / "p1"), run, "--",
                             "-c", config, *SEED], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = os.path.join(run, "train_log.jsonl")
    deadline = time.time() + 300
    while not (os.path.exists(log) and len(open(log).readlines()) >= 2):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    time.sleep(delay)
    proc.kill()
    proc.wait()
    p = run_train(config, tmp_path / "p2", "--resume", "auto", *SEED)
    assert p.returncode == 0, p.stderr[-3000:]
    _assert_same_run(run, reference)


@pytest.mark.slow
def test_loader_workers_give_the_same_run_and_ctrl_c_reaches_only_the_trainer(
        reference, tmp_path):
    """worker_num 2 == inline; Ctrl-C to the whole process group (what a terminal sends:
    the loader workers get it too) writes a checkpoint, exits 130 with one line."""
    config = write_train_config(tmp_path, epoch=EPOCHS, extra="worker_num: 2\n")
    run = run_dir(config)
    from train_helpers import PROBE
    from conftest import REPO
    proc = subprocess.Popen([sys.executable, PROBE, str(tmp_path / "p1"), run, "--",
                             "-c", config, *SEED], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = os.path.join(run, "train_log.jsonl")
    while not (os.path.exists(log) and len(open(log).readlines()) >= 4):
        assert proc.poll() is None
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln[1:5].isdigit()]
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGINT"), err[-3000:]
    p = run_train(config, tmp_path / "p2", "--resume", "auto")
    assert p.returncode == 0, p.stderr[-3000:]
    _assert_same_run(run, reference)


@pytest.mark.slow
def test_real_full_disk(tmp_path):
    """A 150 MB tmpfs: checkpoint 0 fits, checkpoint 1 does not (needs mount rights)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        config = write_train_config(tmp_path, epoch=EPOCHS, extra=f"save_dir: {mnt}\n")
        p = run_train(config, tmp_path / "p1", *SEED)
        run = os.path.join(str(mnt), "train_test")
        assert p.returncode == 1
        lines = stderr_lines(p)
        assert len(lines) == 1 and "No space left on device" in lines[0], p.stderr[-3000:]
        assert not _temp_files(run)
        assert find_resume_checkpoint(run) == os.path.join(run, "0")
        checkpoint_params(run, "0")  # still loads
    finally:
        subprocess.run(["umount", str(mnt)])
