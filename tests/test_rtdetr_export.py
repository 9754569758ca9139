"""Static export of RT-DETRv2 (``export_raw`` / ``export_raw_topk``) and Paddle Inference
parity with dygraph, the way ``ppdet_ext/export`` drives it (to_static, full_graph)."""
import os

import numpy as np
import paddle
import pytest

from rtdetr_helpers import build_tiny_model, make_batch


class _Wrapper(paddle.nn.Layer):
    def __init__(self, model, topk):
        super().__init__()
        self.model, self.topk = model, topk

    def forward(self, image):
        if self.topk:
            return self.model.export_raw_topk(image)
        return self.model.export_raw(image)


def _export_and_run(model, image, tmp_path, topk=False, spec_shape=None, extra_images=()):
    """Export, then run Paddle Inference on ``image`` (and ``extra_images``, same
    predictor). Returns the outputs of ``image`` (list per extra image appended to the
    tuple's end when given) and the set of op types in the graph."""
    model.eval()
    wrapper = _Wrapper(model, topk)
    shape = spec_shape or list(image.shape)
    spec = [paddle.static.InputSpec(shape, 'float32', 'image')]
    static = paddle.jit.to_static(wrapper, input_spec=spec, full_graph=True)
    prefix = os.path.join(str(tmp_path), 'model')
    paddle.jit.save(static, prefix)
    config = paddle.inference.Config(prefix + '.pdmodel', prefix + '.pdiparams')
    config.disable_gpu()
    config.delete_pass('matmul_v2_scale_fuse_pass')  # wrong results on Paddle 2.6.2 CPU
    predictor = paddle.inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    results = []
    for img in (image, *extra_images):
        handle.reshape(img.shape)
        handle.copy_from_cpu(img.numpy())
        predictor.run()
        results.append([predictor.get_output_handle(n).copy_to_cpu()
                        for n in predictor.get_output_names()])
    ops = {op.type for op in static.forward.concrete_program.main_program.global_block().ops}
    return (results[0] if not extra_images else results), ops


def _dygraph(model, image, topk=False):
    model.eval()
    with paddle.no_grad():
        outs = model.export_raw_topk(image) if topk else model.export_raw(image)
    return [o.numpy() for o in outs]


def _trained_tiny(**overrides):
    """Tiny model with weights off their init, like a trained one: at init the box heads are
    zero, so every reference point sits on an anchor, i.e. a pixel centre, and with zero
    offset weights every discrete sampling point lands exactly on a rounding border of
    ``floor(u * W + 0.5)``, where a one-ulp engine difference picks the neighbouring pixel."""
    model = build_tiny_model(**overrides)
    rng = np.random.RandomState(0)
    with paddle.no_grad():
        for p in model.parameters():
            p.set_value(p.numpy() + 0.02 * rng.standard_normal(p.shape).astype('float32'))
    model.train()
    model(make_batch(64, 96))   # BN running stats away from init, so folding is exercised
    return model


@pytest.mark.parametrize('method', ['default', 'discrete'])
def test_dense_export_matches_dygraph(tmp_path, method):
    model = _trained_tiny(decoder={'sampling_method': method})
    image = make_batch(96, 128, seed=3)['image'][:1]
    ref = _dygraph(model, image)
    (scores, boxes), ops = _export_and_run(model, image, tmp_path)
    assert scores.shape == ref[0].shape == (1, 30, 80) and boxes.shape == (1, 30, 4)
    np.testing.assert_allclose(scores, ref[0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(boxes, ref[1], rtol=0, atol=1e-4)  # pixels
    assert ('grid_sampler' in ops) == (method == 'default')


def test_topk_export_after_convert_to_deploy_with_fewer_layers(tmp_path):
    model = _trained_tiny(decoder={'num_layers': 3, 'eval_idx': 1})
    model.eval()
    image = make_batch(96, 128, seed=4)['image'][:1]
    before = _dygraph(model, image, topk=True)
    model.convert_to_deploy()
    assert len(model.transformer.layers) == 2
    ref = _dygraph(model, image, topk=True)
    np.testing.assert_allclose(ref[0], before[0], atol=1e-5)
    (scores, labels, boxes), ops = _export_and_run(model, image, tmp_path, topk=True)
    assert scores.shape == (1, 40) and labels.dtype == np.int64 and boxes.shape == (1, 40, 4)
    np.testing.assert_allclose(scores, ref[0], rtol=0, atol=1e-4)
    # where two scores tie within float noise the order may swap; compare by score order
    same = np.abs(np.diff(ref[0][0])) > 1e-5
    assert (labels[0][:-1][same] == ref[1][0][:-1][same]).all()
    np.testing.assert_allclose(boxes, ref[2], rtol=0, atol=1e-4)
    assert 'gather_nd' not in ops


@pytest.mark.parametrize('method', ['default', 'discrete'])
def test_dynamic_shape_export_runs_on_two_sizes(tmp_path, method):
    model = _trained_tiny(decoder={'sampling_method': method})
    model.eval()
    images = [make_batch(96, 128, seed=5)['image'][:1], make_batch(77, 61, seed=6)['image'][:1]]
    results, _ = _export_and_run(model, images[0], tmp_path, spec_shape=[1, 3, -1, -1],
                                 extra_images=images[1:])
    for image, (scores, boxes) in zip(images, results):
        ref = _dygraph(model, image)
        np.testing.assert_allclose(scores, ref[0], rtol=0, atol=1e-4)
        np.testing.assert_allclose(boxes, ref[1], rtol=0, atol=1e-4)
