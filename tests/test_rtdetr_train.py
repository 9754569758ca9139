"""RT-DETRv2 through ppdet's Trainer (our DetTrainer) on the embedded real COCO images:
a few steps, checkpoint, resume, COCO evaluation. Slow (minutes on a shared CPU)."""
import math
import os

import pytest

from ppdet_ext.engine import api
from ppdet_ext.engine.config import load_config
from rtdetr_helpers import ROOT, TINY_CONFIG


def _cfg(tmp_path, epoch):
    return load_config(TINY_CONFIG, {
        'epoch': epoch, 'save_dir': str(tmp_path), 'snapshot_epoch': 1, 'log_iter': 1,
        'use_ema': False,
        'TrainDataset': {'sample_num': 4}, 'EvalDataset': {'sample_num': 4},
        'TrainReader': {'batch_size': 2, 'stop_strong_aug_epoch': 1},
    })


@pytest.mark.slow
def test_train_resume_and_evaluate(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg, user = _cfg(tmp_path, epoch=1)
    trainer = api.train(cfg, user, seed=0)
    loss = float(trainer.status['training_staus'].get()['loss'])
    assert math.isfinite(loss)
    run = api.run_dir(cfg)
    assert os.path.exists(os.path.join(run, 'model_final.pdparams'))

    cfg, user = _cfg(tmp_path, epoch=2)
    trainer = api.train(cfg, user, resume='auto', seed=0)
    assert trainer.start_epoch == 1 and trainer.status['epoch_id'] == 1

    cfg, user = _cfg(tmp_path, epoch=2)
    metrics = api.evaluate(cfg, user, weights=os.path.join(run, 'model_final'))
    assert set(metrics['bbox']) >= {'AP', 'AP50'}
    assert 0.0 <= metrics['bbox']['AP'] <= 1.0
