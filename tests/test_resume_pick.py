"""--resume auto picks the newest *complete* checkpoint, ignoring debris of a killed write."""
from ppdet_ext.engine.api import find_resume_checkpoint


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
