"""RT-DETRv2 configs: parameter counts pinned, learning-rate / weight-decay groups."""
import glob
import importlib.util
import os

import pytest
from ppdet.core.workspace import create

from ppdet_ext.engine.config import load_config
from rtdetr_helpers import CONFIG_DIR, ROOT

# (our exact count, published RT-DETRv2 figure in M); params exclude BN running stats
PARAMS = {
    'rtdetrv2_r18vd_120e_coco': (20184464, 20),
    'rtdetrv2_r34vd_120e_coco': (31441668, 31),
    'rtdetrv2_r50vd_m_7x_coco': (36647020, 36),
    'rtdetrv2_r50vd_6x_coco': (42944620, 42),
    'rtdetrv2_r101vd_6x_coco': (76661740, 76),
}
DSP = {
    'rtdetrv2_r18vd_dsp_3x_coco': 'rtdetrv2_r18vd_120e_coco',
    'rtdetrv2_r34vd_dsp_1x_coco': 'rtdetrv2_r34vd_120e_coco',
    'rtdetrv2_r50vd_m_dsp_3x_coco': 'rtdetrv2_r50vd_m_7x_coco',
    'rtdetrv2_r50vd_dsp_1x_coco': 'rtdetrv2_r50vd_6x_coco',
}


def _model_info():
    spec = importlib.util.spec_from_file_location(
        'model_info', os.path.join(ROOT, 'tools', 'model_info.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg(name):
    return os.path.join(CONFIG_DIR, name + '.yml')


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_count_is_pinned_and_within_3_percent_of_published(name):
    info = _model_info().model_info(_cfg(name), flops=False)
    exact, published_m = PARAMS[name]
    assert info['params'] == exact
    assert abs(info['params'] / 1e6 - published_m) / published_m < 0.03


def test_every_rtdetrv2_config_loads_and_validates():
    names = [os.path.basename(p)[:-4] for p in glob.glob(os.path.join(CONFIG_DIR, '*.yml'))]
    assert set(PARAMS) | set(DSP) | {'rtdetrv2_tiny_coco_mini'} == set(names)
    for name in names:
        cfg, _ = load_config(_cfg(name))
        assert cfg['architecture'] == 'ExtRTDETR'


@pytest.mark.parametrize('name', sorted(DSP))
def test_dsp_configs_fine_tune_the_matching_default_model(name):
    cfg, _ = load_config(_cfg(name))
    assert cfg['ExtRTDETRDecoder']['sampling_method'] == 'discrete'
    assert DSP[name] in cfg['pretrain_weights']
    base, _ = load_config(_cfg(DSP[name]))
    assert base['ExtRTDETRDecoder']['sampling_method'] == 'default'
    assert base['ResNet']['depth'] == cfg['ResNet']['depth']


def _groups(name):
    cfg, _ = load_config(_cfg(name))
    model = create(cfg.architecture)
    opt = create('OptimizerBuilder')(1e-4, model)
    where = {}
    for gi, group in enumerate(opt._param_groups):
        for p in group['params']:
            where[p.name] = (p.optimize_attr['learning_rate'],
                             group.get('weight_decay', opt._default_dict['weight_decay']))
    named = dict(model.named_parameters())
    return {n: where.get(p.name) for n, p in named.items()}, named


def test_r34_backbone_lr_is_half_and_norms_have_no_weight_decay():
    groups, named = _groups('rtdetrv2_r34vd_120e_coco')
    trainable = [n for n, p in named.items() if not p.stop_gradient]
    assert all(groups[n] is not None for n in trainable)   # nothing left out, no duplicates
    assert groups['backbone.res2.res2a.branch2a.norm.weight'] == (0.5, 0.0)
    assert groups['backbone.res2.res2a.branch2a.conv.weight'] == (0.5, 1e-4)
    assert groups['neck.input_proj.0.bn.weight'] == (1.0, 0.0)
    assert groups['neck.encoder.0.0.norm1.weight'] == (1.0, 0.0)
    assert groups['transformer.layers.0.norm3.bias'] == (1.0, 0.0)
    assert groups['transformer.enc_output_norm.weight'] == (1.0, 0.0)
    assert groups['transformer.layers.0.linear1.weight'] == (1.0, 1e-4)
    backbone = [n for n in trainable if n.startswith('backbone.')]
    assert backbone and all(groups[n][0] == 0.5 for n in backbone)
    assert all(groups[n][0] == 1.0 for n in trainable if not n.startswith('backbone.'))


def test_r50_backbone_lr_is_a_tenth():
    groups, named = _groups('rtdetrv2_r50vd_6x_coco')
    backbone = [n for n, p in named.items() if n.startswith('backbone.') and not p.stop_gradient]
    assert backbone and all(groups[n] == (0.1, 1e-4) for n in backbone)
    assert all(named[n].stop_gradient for n in named if n.startswith('backbone.')
               and '.norm.' in n)
