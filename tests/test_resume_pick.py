"""--resume auto picks the newest *complete* checkpoint, ignoring debris of a killed write."""
import json

import pytest

from ppdet_ext.engine.checkpoint import (CheckpointError, CheckpointNotFoundError, Position,
                                         base_path, find_resume_checkpoint,
                                         read_position)


def _touch(d, *names):
    for n in names:
        (d / n).write_bytes(b"x")


def test_newest_complete_checkpoint(tmp_path):
    _touch(tmp_path, "0.pdparams", "0.pdopt", "1.pdparams", "1.pdopt",
           "2.pdopt", "2.pdparams.tmp4242",      # killed while writing epoch 2's params
           "3.pdparams",                          # params without optimizer state
           "best_model.pdparams", "best_model.pdopt")
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "1")


def test_model_final_wins_and_empty_dir(tmp_path):
    assert find_resume_checkpoint(str(tmp_path)) is None
    _touch(tmp_path, "7.pdparams", "7.pdopt", "model_final.pdparams", "model_final.pdopt")
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "model_final")


def _state(d, name, epoch, step):
    (d / f"{name}.state.json").write_text(json.dumps(
        {"version": 1, "epoch": epoch, "step": step, "steps_per_epoch": 3, "seed": 1,
         "world_size": 1}))


def test_order_follows_the_state_files(tmp_path):
    _touch(tmp_path, "0.pdparams", "0.pdopt", "1.pdparams", "1.pdopt",
           "step_5.pdparams", "step_5.pdopt", "step_7.pdopt", "step_7.state.json")
    _state(tmp_path, "0", 1, 0)
    _state(tmp_path, "1", 2, 0)
    _state(tmp_path, "step_5", 1, 2)        # mid-epoch 1: older than checkpoint 1
    _state(tmp_path, "step_7", 2, 1)        # incomplete (no .pdparams): ignored
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "1")
    _state(tmp_path, "1", 1, 1)             # now step_5 (epoch 1, step 2) is further
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "step_5")
    assert read_position(str(tmp_path / "step_5")) == Position(1, 2, 3, 1, 1)


def test_unreadable_state_file_is_skipped(tmp_path):
    _touch(tmp_path, "0.pdparams", "0.pdopt", "step_9.pdparams", "step_9.pdopt")
    (tmp_path / "step_9.state.json").write_text("{not json")
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "0")
    with pytest.raises(CheckpointError, match="step_9.state.json: not a checkpoint state"):
        read_position(str(tmp_path / "step_9"))
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint .*nothing.pdparams"):
        read_position(str(tmp_path / "nothing"))


def test_base_path_strips_checkpoint_suffixes():
    assert base_path("out/x/3.pdparams") == base_path("out/x/3.state.json") == "out/x/3"
    assert base_path("out/x/model_final") == "out/x/model_final"
