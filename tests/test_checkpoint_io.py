"""Checkpoint files, temp-file cleanup, the train log cut-back, stop signals, fault hook."""
import errno
import json
import os
import signal
import subprocess
import sys

import pytest

from ppdet_ext.engine import checkpoint, faults
from ppdet_ext.engine.callbacks import truncate_train_log
from ppdet_ext.engine.checkpoint import CheckpointError, Position, atomic_write
from ppdet_ext.engine.interrupt import StopRequest, TrainingInterrupted


def test_atomic_write_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "0.pdparams"
    target.write_text("old")

    def disk_full(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CheckpointError, match=r"cannot write .*0\.pdparams: No space left"):
        atomic_write(str(target), disk_full)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["0.pdparams"]


def test_atomic_write_interrupted_removes_temp(tmp_path):
    def interrupted(tmp):
        open(tmp, "w").close()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(tmp_path / "x.pdopt"), interrupted)
    assert os.listdir(tmp_path) == []


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = [f"0.pdparams.tmp{dead}", f"0.pdopt.tmp{os.getpid()}",
                 f"1.pdopt.tmp{live.pid}", "notes.tmpfile", "0.pdparams"]
        for n in names:
            (tmp_path / n).write_text("x")
        removed = checkpoint.remove_stale_temp_files(str(tmp_path))
        assert sorted(os.path.basename(p) for p in removed) == sorted(names[:2])
        assert sorted(os.listdir(tmp_path)) == sorted(names[2:])
    finally:
        live.kill()
        live.wait()


def test_train_log_cut_back_to_the_resume_step(tmp_path):
    log = tmp_path / "train_log.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(6)]
    log.write_text("".join(lines) + '{"step": 6, "lo')          # killed mid-append
    assert truncate_train_log(str(log), 4) == 3
    assert log.read_text() == "".join(lines[:4])
    assert truncate_train_log(str(log), 4) == 0
    assert truncate_train_log(str(tmp_path / "absent.jsonl"), 0) == 0


def test_stop_request_records_signals_and_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        assert stop.poll() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.poll() == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)          # after SIGTERM: still a request
        assert stop.poll() == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.poll() == signal.SIGINT
            os.kill(os.getpid(), signal.SIGINT)      # the second Ctrl-C
    assert signal.getsignal(signal.SIGINT) is before


def test_training_interrupted_message_and_exit_code():
    e = TrainingInterrupted(signal.SIGINT, "out/step_5", Position(epoch=1, step=2))
    assert e.exit_code == 130
    assert str(e) == ("stopped by SIGINT at epoch 1 step 2: checkpoint out/step_5; "
                      "continue with --resume auto")
    assert TrainingInterrupted(signal.SIGTERM, None, None).exit_code == 143


def test_fault_plan(monkeypatch):
    monkeypatch.setenv(faults.ENV, "checkpoint_file:2:enospc,step_end:1:bogus")
    monkeypatch.setattr(faults, "_plan", None)
    monkeypatch.setattr(faults, "_counts", {})
    faults.hit("checkpoint_file")
    with pytest.raises(OSError) as e:
        faults.hit("checkpoint_file")
    assert e.value.errno == errno.ENOSPC
    faults.hit("checkpoint_file")                     # only the 2nd hit acts
    with pytest.raises(ValueError, match="unknown action 'bogus'"):
        faults.hit("step_end")
    faults.hit("step_begin")                          # points not in the plan: no-op
