"""RT-DETRv2 forward/backward on odd, non-square inputs and images without boxes."""
import math

import numpy as np
import paddle
import pytest

from rtdetr_helpers import build_tiny_model, make_batch


def _trainable_without_grad(model):
    return [n for n, p in model.named_parameters() if not p.stop_gradient and p.grad is None]


@pytest.mark.parametrize('hw', [(97, 131), (131, 67)])
def test_train_forward_backward_reaches_every_trainable_parameter(hw):
    model = build_tiny_model(decoder={'num_layers': 2})
    model.train()
    out = model(make_batch(*hw, boxes_per_image=(3, 0)))   # second image has no boxes
    keys = {f'loss_{t}{s}' for t in ('vfl', 'bbox', 'giou') for s in ('', '_aux', '_dn')}
    assert keys | {'loss'} == set(out)
    for k, v in out.items():
        assert math.isfinite(float(v)), k
    assert float(out['loss_bbox_dn']) > 0  # the denoising group was built and matched
    out['loss'].backward()
    assert _trainable_without_grad(model) == []


def test_train_batch_without_any_box_gives_finite_loss():
    model = build_tiny_model()
    model.train()
    out = model(make_batch(65, 99, boxes_per_image=(0, 0)))
    assert math.isfinite(float(out['loss']))
    assert float(out['loss_bbox']) == 0.0 and float(out['loss_vfl_dn']) == 0.0
    assert float(out['loss_vfl']) > 0  # all queries are pushed towards background
    out['loss'].backward()


@pytest.mark.parametrize('hw', [(97, 131), (160, 75)])
def test_eval_output_is_in_original_image_pixels(hw):
    model = build_tiny_model()
    model.eval()
    batch = make_batch(*hw)
    with paddle.no_grad():
        out = model(batch)
    bbox, num = out['bbox'].numpy(), out['bbox_num'].numpy()
    assert bbox.shape == (2 * 40, 6) and num.tolist() == [40, 40]
    assert np.all((bbox[:, 0] >= 0) & (bbox[:, 0] < 80) & (bbox[:, 0] == np.round(bbox[:, 0])))
    assert np.all((bbox[:, 1] >= 0) & (bbox[:, 1] <= 1))
    scores = bbox[:40, 1]
    assert np.all(np.diff(scores) <= 1e-7)  # sorted top-k
    # scale_factor (sy, sx) = (0.5, 0.25): original size is (2h, 4w); boxes stay inside it
    h, w = hw
    assert bbox[:, [2, 4]].max() <= 4 * w + 1e-3 and bbox[:, [3, 5]].max() <= 2 * h + 1e-3
    assert np.all(bbox[:, 4] >= bbox[:, 2]) and np.all(bbox[:, 5] >= bbox[:, 3])


def test_eval_idx_runs_fewer_decoder_layers():
    paddle.seed(1)
    full = build_tiny_model(decoder={'num_layers': 3, 'eval_idx': -1})
    early = build_tiny_model(decoder={'num_layers': 3, 'eval_idx': 0})
    early.set_state_dict(full.state_dict())
    image = make_batch(96, 128)['image']
    full.eval(), early.eval()
    with paddle.no_grad():
        s_full, b_full = full.export_raw(image)
        s_early, b_early = early.export_raw(image)
        early.convert_to_deploy()
        s_cut, b_cut = early.export_raw(image)
    assert len(early.transformer.layers) == 1
    assert not np.allclose(s_full.numpy(), s_early.numpy())
    np.testing.assert_allclose(s_cut.numpy(), s_early.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b_cut.numpy(), b_early.numpy(), rtol=1e-4, atol=1e-3)


def test_convert_to_deploy_folds_repvgg_without_changing_outputs():
    model = build_tiny_model()
    model.train()
    model(make_batch(64, 96))  # move BN running stats away from their init values
    model.eval()
    image = make_batch(64, 96)['image']
    with paddle.no_grad():
        before = model.export_raw(image)
        model.convert_to_deploy()
        after = model.export_raw(image)
    assert not any(hasattr(m, 'conv1') for m in model.neck.sublayers()
                   if type(m).__name__ == 'ExtRepVggBlock')
    np.testing.assert_allclose(after[0].numpy(), before[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(after[1].numpy(), before[1].numpy(), rtol=1e-4, atol=1e-3)


def test_denoising_group_layout():
    from ppdet_ext.modeling.rtdetr.denoising import build_denoising_group
    embed = paddle.nn.Embedding(6, 8, padding_idx=5)
    gt_class = [paddle.to_tensor([[1], [2], [3]]), paddle.zeros([0, 1], 'int32'),
                paddle.to_tensor([[4]])]
    gt_bbox = [paddle.full([3, 4], 0.3), paddle.zeros([0, 4]), paddle.full([1, 4], 0.5)]
    query, ref, mask, meta = build_denoising_group(
        gt_class, gt_bbox, num_classes=5, num_queries=7, class_embed=embed, num_denoising=13)
    groups = 13 // 3
    assert meta['num_group'] == groups and meta['num_split'] == [6 * groups, 7]
    assert query.shape == [3, 6 * groups, 8] and ref.shape == [3, 6 * groups, 4]
    assert meta['positive_idx'][0].tolist() == [0, 1, 2, 6, 7, 8, 12, 13, 14, 18, 19, 20]
    assert meta['positive_idx'][1].size == 0 and meta['gt_idx'][2].tolist() == [0] * groups
    m = mask.numpy()
    assert m.shape == (6 * groups + 7, 6 * groups + 7)
    assert not m[6 * groups:, :6 * groups].any()        # matching queries never see dn
    assert m[:6, :6].all() and not m[:6, 6:12].any()    # a group sees itself, not others
    assert m[:, 6 * groups:].all()                       # everyone sees the matching queries
    assert np.isfinite(ref.numpy()).all()


def test_export_raw_refuses_train_mode():
    model = build_tiny_model()
    model.train()
    with pytest.raises(RuntimeError, match='eval'):
        model.export_raw(make_batch(64, 64)['image'])


def test_public_split_hooks_reproduce_the_eval_forward():
    model = build_tiny_model(decoder={'num_layers': 2})
    model.eval()
    image = make_batch(96, 64)['image']
    dec = model.transformer
    with paddle.no_grad():
        ref_boxes, ref_logits = dec(model._features(image))
        memory, shapes, out_memory, enc_logits, enc_coord = dec.encoder_outputs(
            model._features(image))
        assert shapes == [(12, 8), (6, 4), (3, 2)]
        assert memory.shape == [2, 12 * 8 + 6 * 4 + 3 * 2, 64] and enc_coord.shape[-1] == 4
        top = paddle.topk(enc_logits.max(-1), dec.num_queries, axis=1)[1]
        rows = [paddle.stack([t[i] for t, i in zip(x, top)]) for x in (out_memory, enc_coord)]
        boxes, logits = dec.decode_queries(rows[0], rows[1], memory, shapes)
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes[-1].numpy(), ref_boxes.numpy(), atol=1e-6)
    np.testing.assert_allclose(logits[-1].numpy(), ref_logits.numpy(), atol=1e-5)
