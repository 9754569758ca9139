"""QAT on the tiny GFL config: a couple of iterations on coco_mini, INT8 export, runner load."""
import os

import numpy as np
import pytest

from conftest import PYTHON, REPO  # noqa: F401

SLIM_CFG = os.path.join(REPO, "configs", "slim", "qat_gfl.yml")


def test_slim_config_rejects_unknown_keys(tmp_path):
    from ppdet_ext.slim.qat import load_slim_config

    assert load_slim_config(SLIM_CFG).weight_quantize_type == "channel_wise_abs_max"
    bad = tmp_path / "bad.yml"
    bad.write_text("slim: QAT\nQAT: {weight_quantise_type: abs_max}\n")
    with pytest.raises(ValueError, match="unknown key .QAT.weight_quantise_type.*did you mean .weight_quantize_type"):
        load_slim_config(str(bad))


def test_qat_trains_and_exports_int8(repo_cwd, tmp_path):
    from ppdet_ext.engine.config import load_config
    from ppdet_ext_deploy import Runner
    from ppdet_ext.slim.qat import count_quantized, load_slim_config, train_qat

    cfg, user = load_config("configs/gfl/gfl_tiny_coco_mini.yml", [
        "epoch=1", "TrainDataset.sample_num=2", "TrainReader.batch_size=2", "log_iter=1",
        f"save_dir={tmp_path}", "weights=null"])
    out = str(tmp_path / "int8")
    trainer, meta = train_qat(cfg, user, load_slim_config(SLIM_CFG), weights=None,
                              output_dir=out, seed=0)
    assert count_quantized(trainer.model) > 10
    assert meta["quantization"]["method"] == "qat"
    assert os.path.isfile(os.path.join(tmp_path, "gfl_tiny_coco_mini_qat", "model_final.pdparams"))
    x = np.random.RandomState(0).rand(1, 3, 160, 256).astype("float32")
    for backend in ("paddle-cpu", "paddle-cpu-int8"):
        r = Runner(out, backend=backend, backend_options={"threads": 1})
        scores, boxes = r.backend.infer(x)
        r.close()
        assert scores.shape[0] == 1 and scores.shape[2] == 80 and boxes.shape[-1] == 4
        assert np.isfinite(scores).all() and np.isfinite(boxes).all()
