"""Run PaddleDetection develop's RT-DETRv2 on random weights; dump its .pdparams and outputs.

    .venv/bin/python scripts/rtdetrv2_paddledet_reference.py --pd-root PD \
        --input image.npy --out /tmp/pd_tiny

``PD`` holds the ``ppdet`` package of a PaddleDetection develop checkout (commit
666f597 was used); nothing of it is copied here. Its ``ppdet/__init__`` pulls in the data
pipeline and extra dependencies, so the packages are replaced by empty stubs and only the
model files are imported (``ResNet``, ``HybridEncoder`` + ``TransformerLayer``,
``RTDETRTransformerv2``); they run unchanged on this project's Paddle 2.6.2. Run it in a
process that has not imported ppdet 2.6 (this script imports nothing from ppdet_ext).

The model is the ``tiny`` one of ``scripts/rtdetrv2_reference.py`` in PaddleDetection's
terms, composed as its ``DETR`` names it (``backbone``, ``neck``, ``transformer``), eval
size = input size. Weights: PaddleDetection's initialisation, then Gaussian noise (std
``--noise``) on every floating tensor, BatchNorm variances from ``U[0.5, 1.5)``, class-head
biases raised by ``--class-bias``; the
backbone comes from ``tests/rtdetrv2_synthetic.py`` (seeded by name) and is left out of
the file (names and shapes in ``backbone_shapes.json``).

Writes ``OUT/checkpoint.pdparams`` (``paddle.save`` of the state dict),
``OUT/fused_convs.pdparams`` (the fused conv each RepVGG block gets from
``convert_to_deploy()``, which deletes the two branches), ``OUT/backbone_shapes.json`` and
``OUT/outputs.npz`` (``{default,discrete}_{logits,boxes}``, ``[1, Q, 80]`` / ``[1, Q, 4]``
cxcywh normalized, eval mode, float32 CPU).
"""
import argparse
import json
import os
import re
import sys
import types
import zlib  # noqa: F401  (before paddle: libpaddle exports zlib symbols)

import numpy as np
import paddle

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests'))
from rtdetrv2_synthetic import synthetic_tensor  # noqa: E402


def import_paddledet(pd_root):
    root = os.path.join(os.path.abspath(pd_root), 'ppdet')
    if 'ppdet' in sys.modules:
        raise RuntimeError('ppdet is already imported in this process')
    for name in ('', '.modeling', '.modeling.backbones', '.modeling.transformers',
                 '.modeling.heads'):
        mod = types.ModuleType('ppdet' + name)
        mod.__path__ = [root + name.replace('.', '/')]
        sys.modules['ppdet' + name] = mod
    from ppdet.modeling.backbones.resnet import ResNet
    from ppdet.modeling.transformers.hybrid_encoder import HybridEncoder, TransformerLayer
    from ppdet.modeling.transformers.rtdetr_transformerv2 import RTDETRTransformerv2
    return ResNet, HybridEncoder, TransformerLayer, RTDETRTransformerv2


class PaddleDetDETR(paddle.nn.Layer):
    """The tiny model, named as PaddleDetection's ``DETR`` names its parts."""

    def __init__(self, classes, method, hw):
        super().__init__()
        resnet, encoder, layer, decoder = classes
        self.backbone = resnet(depth=18, variant='d', norm_type='bn', freeze_at=-1,
                               freeze_norm=False, return_idx=[1, 2, 3], num_stages=4)
        self.neck = encoder(
            in_channels=[s.channels for s in self.backbone.out_shape], feat_strides=[8, 16, 32],
            hidden_dim=32, use_encoder_idx=[2], num_encoder_layers=1,
            encoder_layer=layer(d_model=32, nhead=2, dim_feedforward=64, dropout=0.,
                                activation='gelu'),
            expansion=0.5, depth_mult=0.34, act='silu', eval_size=list(hw))
        self.transformer = decoder(
            num_classes=80, hidden_dim=32, num_queries=30, backbone_feat_channels=[32] * 3,
            feat_strides=[8, 16, 32], num_levels=3, num_decoder_points=[4, 2, 3], nhead=2,
            num_decoder_layers=2, dim_feedforward=64, num_denoising=10,
            learnt_init_query=False, eval_size=list(hw), eval_idx=-1,
            cross_attn_sampling_method=method)

    def forward(self, x):
        out_bboxes, out_logits = self.transformer(self.neck(self.backbone({'image': x})))[:2]
        return out_logits[-1], out_bboxes[-1]


def randomize(model, seed, noise, class_bias=0.0):
    rng = np.random.RandomState(seed)
    for name, t in model.state_dict().items():
        shape = tuple(t.shape)
        if re.search(r'(enc|dec)_score_head(\.\d+)?\.bias$', name):
            value = t.numpy() + (noise * rng.standard_normal(shape)).astype('float32') + class_bias
        elif name.startswith('backbone.'):
            value = synthetic_tensor(name, shape, 'paddle')
        elif 'float' not in str(t.dtype) or name.endswith('num_points_scale'):
            continue
        elif name.endswith('_variance'):
            value = (0.5 + rng.random_sample(shape)).astype('float32')
        else:
            value = t.numpy() + (noise * rng.standard_normal(shape)).astype('float32')
        t.set_value(value.astype('float32'))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--pd-root', required=True, help='folder holding develop ppdet/')
    p.add_argument('--input', required=True, help='uint8 HWC image .npy (square)')
    p.add_argument('--out', required=True)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--noise', type=float, default=0.1)
    p.add_argument('--class-bias', type=float, default=0.0,
                   help='added to the class-head biases (random models score ~0.01 otherwise)')
    args = p.parse_args()

    classes = import_paddledet(args.pd_root)
    image = np.load(args.input)
    hw = image.shape[:2]
    x = paddle.to_tensor(image.astype('float32').transpose(2, 0, 1)[None] / 255.0)
    paddle.seed(args.seed)
    model = PaddleDetDETR(classes, 'default', hw)
    model.eval()
    randomize(model, args.seed, args.noise, args.class_bias)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    os.makedirs(args.out, exist_ok=True)
    keep = {k: v for k, v in state.items() if not k.startswith('backbone.')}
    paddle.save(keep, os.path.join(args.out, 'checkpoint.pdparams'))
    with open(os.path.join(args.out, 'backbone_shapes.json'), 'w') as f:
        json.dump({k: list(v.shape) for k, v in state.items() if k not in keep}, f, indent=0)
    outputs = {}
    for method in ('default', 'discrete'):
        m = PaddleDetDETR(classes, method, hw)
        m.set_state_dict(state)
        m.eval()
        with paddle.no_grad():
            logits, boxes = m(x)
        outputs[f'{method}_logits'], outputs[f'{method}_boxes'] = logits.numpy(), boxes.numpy()
        if method == 'default':
            for layer in m.sublayers():
                if hasattr(layer, 'convert_to_deploy'):
                    layer.convert_to_deploy()
            with paddle.no_grad():
                outputs['fused_default_logits'] = m(x)[0].numpy()
            fused = {k: v.numpy() for k, v in m.state_dict().items() if k not in state}
            paddle.save(fused, os.path.join(args.out, 'fused_convs.pdparams'))
    np.savez(os.path.join(args.out, 'outputs.npz'), **outputs)
    print(f"paddle {paddle.__version__}: PaddleDetection develop tiny at {hw[0]}x{hw[1]} "
          f"-> {args.out}")


if __name__ == '__main__':
    main()
