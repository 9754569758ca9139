"""Shared builders for the RT-DETRv2 tests: a tiny model from the tiny YAML config."""
import os

import ppdet_ext  # noqa: F401  (zlib before paddle; registers our modules)
import numpy as np
import paddle
from ppdet.core.workspace import create

from ppdet_ext.engine.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, 'configs', 'rtdetrv2')
TINY_CONFIG = os.path.join(CONFIG_DIR, 'rtdetrv2_tiny_coco_mini.yml')
NUM_CLASSES = 80


def load_tiny_config(decoder=None, encoder=None, postprocess=None):
    """Tiny config (hidden 64, 1 decoder layer, 30 queries) with optional overrides."""
    cfg, _ = load_config(TINY_CONFIG)
    cfg['hidden_dim'] = 64
    cfg['ExtHybridEncoder'].update({'nhead': 4, 'dim_feedforward': 128})
    cfg['ExtRTDETRDecoder'].update({'num_layers': 1, 'num_queries': 30, 'num_denoising': 20,
                                    'dim_feedforward': 128})
    cfg['ExtRTDETRPostProcess'].update({'num_top_queries': 40})
    cfg['ExtHybridEncoder'].update(encoder or {})
    cfg['ExtRTDETRDecoder'].update(decoder or {})
    cfg['ExtRTDETRPostProcess'].update(postprocess or {})
    return cfg


def build_tiny_model(seed=0, **overrides):
    """A freshly initialised tiny ``ExtRTDETR`` (train mode)."""
    cfg = load_tiny_config(**overrides)
    paddle.seed(seed)
    np.random.seed(seed)
    return create(cfg.architecture)


def make_batch(height, width, boxes_per_image=(3, 0), seed=0):
    """Training/eval batch of random images; image i gets ``boxes_per_image[i]`` boxes
    (cxcywh normalized), 0 meaning an image with no boxes."""
    rng = np.random.RandomState(seed)
    b = len(boxes_per_image)
    gt_bbox, gt_class = [], []
    for n in boxes_per_image:
        cxcy = rng.uniform(0.25, 0.75, size=(n, 2))
        wh = rng.uniform(0.05, 0.4, size=(n, 2))
        boxes = np.concatenate([cxcy, wh], 1).astype('float32').reshape([n, 4])
        gt_bbox.append(paddle.to_tensor(boxes))
        gt_class.append(paddle.to_tensor(rng.randint(0, NUM_CLASSES, size=(n, 1)).astype('int32')))
    return {
        'image': paddle.to_tensor(rng.rand(b, 3, height, width).astype('float32')),
        'gt_bbox': gt_bbox, 'gt_class': gt_class,
        'im_shape': paddle.to_tensor([[height, width]] * b, dtype='float32'),
        'scale_factor': paddle.to_tensor([[0.5, 0.25]] * b, dtype='float32'),
        'epoch_id': 0,
    }
