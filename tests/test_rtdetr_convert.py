"""Converted reference checkpoints reproduce the reference implementations' outputs.

Test data (tests/data/rtdetrv2/README.md): a tiny RT-DETRv2 (R18-vd backbone, 32-wide,
2 decoder layers, 30 queries) run once by rtdetrv2_pytorch (torch 2.13) and once by
PaddleDetection develop (Paddle 2.6.2) on one 192x192 COCO image, with their checkpoints
(backbone rebuilt from ``rtdetrv2_synthetic``). Converted into ``ExtRTDETR``, the decoder's
final logits and boxes must agree to 1e-4 (measured: <= 2.1e-6) with the same top-30
(query, class) set, for both sampling methods, unfused and RepVGG-fused checkpoints.
"""
import os

import numpy as np
import paddle
import pytest

from ppdet_ext.convert import build_model
from ppdet_ext.convert.rtdetrv2_weights import convert_rtdetrv2, coco_label_rows
from rtdetr_reference_data import (CONFIG, DATA, LAYOUTS, ROOT, reference_image,
                                   reference_outputs, reference_state)

TOL = 1e-4


@pytest.fixture(scope='module')
def model():
    from ppdet_ext.registry import reset_global_config
    reset_global_config()
    m, _ = build_model(CONFIG)
    yield m
    reset_global_config()


@pytest.fixture(scope='module')
def image():
    return reference_image()


def run(model, image, method):
    for layer in model.transformer.layers:
        layer.cross_attn.method = method
    with paddle.no_grad():
        boxes, logits = model.transformer(model.neck(model.backbone({'image': image})))
    return logits.numpy(), boxes.numpy()


def top_set(logits, k):
    flat = logits.reshape(logits.shape[0], -1)
    return {tuple(r) for r in np.stack(np.unravel_index(
        np.argsort(-flat[0])[:k], logits.shape[1:]), 1)}


def assert_matches(model, image, layout, method):
    ref = reference_outputs(layout)
    logits, boxes = run(model, image, method)
    np.testing.assert_allclose(logits, ref[f'{method}_logits'], rtol=0, atol=TOL)
    np.testing.assert_allclose(boxes, ref[f'{method}_boxes'], rtol=0, atol=TOL)
    k = logits.shape[1]
    assert top_set(logits, k) == top_set(ref[f'{method}_logits'], k)


@pytest.mark.parametrize('fused', [False, True])
@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_converted_checkpoint_reproduces_reference(model, image, layout, fused):
    state, report = convert_rtdetrv2((reference_state(layout, fused), layout), model)
    assert report.ok, '\n'.join(report.lines())
    assert report.applied['qkv'] > 0
    assert (report.applied['transpose'] > 0) == (layout == 'rtdetrv2_pytorch')
    assert (report.applied['dn_pad'] > 0) == (layout == 'paddledet_develop')
    assert (report.applied['repvgg_fused'] > 0) == fused
    model.set_state_dict(state)
    for method in ('default', 'discrete'):
        assert_matches(model, image, layout, method)


def test_the_reference_data_tells_the_methods_apart():
    """Default and discrete outputs differ far beyond the tolerance (so the rounding and
    the embedding layout are pinned by the test above)."""
    for layout in LAYOUTS:
        ref = reference_outputs(layout)
        assert np.abs(ref['default_logits'] - ref['discrete_logits']).max() > 100 * TOL


def test_category_id_rows_map_to_contiguous_labels(model, image):
    """A head with one row per COCO category id (91 rows) converts to the same model."""
    layout = 'rtdetrv2_pytorch'
    state = reference_state(layout)
    rows = coco_label_rows()
    for name in list(state):
        if name.endswith(('enc_score_head.weight', 'enc_score_head.bias')) or (
                'dec_score_head' in name):
            arr = state[name]
            wide = np.full((91,) + arr.shape[1:], 7.0, arr.dtype)   # unused ids: junk rows
            wide[rows] = arr
            state[name] = wide
    dn = state['decoder.denoising_class_embed.weight']
    wide = np.zeros((92, dn.shape[1]), dn.dtype)
    wide[rows] = dn[:80]
    state['decoder.denoising_class_embed.weight'] = wide
    out, report = convert_rtdetrv2((state, layout), model)
    assert report.ok and report.applied['label_map'] > 0, '\n'.join(report.lines())
    model.set_state_dict(out)
    assert_matches(model, image, layout, 'default')


def test_every_problem_is_reported(model):
    layout = 'paddledet_develop'
    state = reference_state(layout)
    state['transformer.tgt_embed.weight'] = np.zeros((30, 32), 'float32')      # unknown
    del state['neck.lateral_convs.0.conv.weight']                             # missing
    state['transformer.enc_score_head.bias'] = np.zeros(81, 'float32')        # shape
    scale = 'transformer.decoder.layers.0.cross_attn.num_points_scale'
    state[scale] = np.full_like(state[scale], 0.25)                           # wrong points
    _, report = convert_rtdetrv2((state, layout), model)
    assert not report.ok
    text = '\n'.join(report.lines())
    assert 'UNMAPPED source tensor: transformer.tgt_embed.weight' in text
    assert 'MISSING target tensor: neck.lateral_convs.0.conv2d.weight' in text
    assert 'SHAPE MISMATCH: transformer.enc_score_head.bias [81]' in text
    assert 'sampling points per level differ' in text
    assert text.endswith('FAILED (1 unmapped, 1 missing, 2 shape mismatches)')


def test_cli_converts_and_refuses(tmp_path, image, capsys):
    """tools/convert_weights.py: a complete checkpoint -> .pdparams that ppdet's own
    load_weight puts into the config's model (same outputs); an incomplete one (the
    committed torch file has no backbone) -> exit 1, missing tensors listed, nothing
    written; a pickle that would run code -> exit 1 with a one-line error."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    import convert_weights
    from ppdet.utils.checkpoint import load_weight
    from ppdet_ext.registry import reset_global_config

    src = tmp_path / 'complete.pdparams'
    paddle.save(reference_state('paddledet_develop'), str(src))
    out = tmp_path / 'converted'
    reset_global_config()
    assert convert_weights.main(['-c', CONFIG, '--src', str(src), '--out', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'result: OK, every tensor mapped' in text and 'applied: packed attention' in text
    m, _ = build_model(CONFIG)
    load_weight(m, str(out))
    ref = reference_outputs('paddledet_develop')
    np.testing.assert_allclose(run(m, image, 'default')[0], ref['default_logits'], atol=TOL)

    reset_global_config()
    torch_ckpt = os.path.join(DATA, 'rtdetrv2_pytorch', 'checkpoint.pth')
    assert convert_weights.main(['-c', CONFIG, '--src', torch_ckpt,
                                 '--out', str(tmp_path / 'no')]) == 1
    captured = capsys.readouterr()
    assert 'MISSING target tensor: backbone.conv1.conv1_1.conv.weight' in captured.out
    assert 'nothing written' in captured.err and not (tmp_path / 'no.pdparams').exists()

    evil = tmp_path / 'evil.pdparams'
    evil.write_bytes(b'\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06'
                     b'system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.')
    reset_global_config()
    assert convert_weights.main(['-c', CONFIG, '--src', str(evil), '--out', str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "'os.system'" in err and 'evil.pdparams' in err
    reset_global_config()


def test_torch_backbone_names_follow_ppdet_resnet():
    """PResNet -> ppdet ResNet names, including ResNet-101's ``res4b{i}`` blocks and the
    vd shortcut (pool + conv) that both name ``short.conv.{conv,norm}``."""
    from ppdet_ext.convert.rtdetrv2_names import translate
    counts = {0: 3, 1: 4, 2: 23, 3: 3}
    cases = {
        'backbone.conv1.conv1_2.norm.running_var': 'backbone.conv1.conv1_2.norm._variance',
        'backbone.res_layers.0.blocks.0.short.conv.weight':
            'backbone.res2.res2a.short.conv.weight',
        'backbone.res_layers.1.blocks.0.short.conv.conv.weight':
            'backbone.res3.res3a.short.conv.conv.weight',
        'backbone.res_layers.1.blocks.0.short.conv.norm.running_mean':
            'backbone.res3.res3a.short.conv.norm._mean',
        'backbone.res_layers.2.blocks.0.branch2c.norm.weight':
            'backbone.res4.res4a.branch2c.norm.weight',
        'backbone.res_layers.2.blocks.22.branch2b.conv.weight':
            'backbone.res4.res4b22.branch2b.conv.weight',
        'backbone.res_layers.3.blocks.2.branch2a.norm.bias':
            'backbone.res5.res5c.branch2a.norm.bias',
    }
    for src, dst in cases.items():
        assert [t for t, _ in translate(src, 'rtdetrv2_pytorch', counts)] == [dst], src
    assert translate('backbone.res_layers.0.blocks.0.branch2a.norm.num_batches_tracked',
                     'rtdetrv2_pytorch', counts)[0][1].startswith('drop:')
    assert translate('backbone.res_layers.0.blocks.0.branch2a.act.weight',
                     'rtdetrv2_pytorch', counts) is None
