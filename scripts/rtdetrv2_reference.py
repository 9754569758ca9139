"""Run the reference RT-DETRv2 (rtdetrv2_pytorch, lyuwenyu/RT-DETR) on random weights and
dump its checkpoint and outputs. Runs in a venv with torch, NOT the project's venv:

    /work/i12-ref-venv/bin/python scripts/rtdetrv2_reference.py --ref-root REF \
        --size r18vd --input image.npy --out /tmp/ref_r18vd

``REF`` is a checkout of the ``rtdetrv2_pytorch`` folder of lyuwenyu/RT-DETR (commit
068dfde was used). Nothing of it is copied here: its modules are imported from ``REF``.
Only the model classes are needed, so the ``src`` package's ``__init__`` files (which pull
in its data pipeline and torchvision) are bypassed with empty package stubs, its
``register`` decorator is replaced by a no-op, and ``torchvision.ops.boxes.box_area`` (only
used by training code in ``box_ops``) is stubbed when torchvision is not installed.

Writes ``OUT/checkpoint.pth`` (``{'ema': {'module': state_dict, 'updates': 0},
'last_epoch': 0}``; ``--fused`` adds ``OUT/fused_convs.pth``, the tensors the reference's
``convert_to_deploy()`` adds: one fused conv per RepVGG block) and ``OUT/outputs.npz``
with ``pred_logits`` ``[1, Q, 80]``, ``pred_boxes`` ``[1, Q, 4]`` (cxcywh normalized) and
``tokens`` ``[1, Q]`` (the encoder token each query was selected from) for each sampling
method (``default_*``, ``discrete_*``), eval mode, float32 on the CPU.

Weights: the reference's own initialisation, then every floating tensor gets Gaussian
noise (std ``--noise``, default 0.02; BatchNorm running variances are drawn from
``[0.5, 1.5]``), so that no head is at its zero init and the outputs exercise every
parameter; ``--class-bias`` raises the class-head biases (their init gives every score
about 0.01) so that detections pass score thresholds. ``--backbone-rule`` instead fills the
backbone from ``tests/rtdetrv2_synthetic.py`` (seeded by each tensor's name, so a test can
rebuild it without storing it), leaves it out of the checkpoint and lists its names and
shapes in ``OUT/backbone_shapes.json``.
"""
import argparse
import json
import os
import re
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests'))
from rtdetrv2_synthetic import synthetic_tensor  # noqa: E402  (pure numpy)

# Model sizes of the reference configs (configs/rtdetrv2/*.yml of rtdetrv2_pytorch).
SIZES = {
    'r18vd': dict(depth=18, enc=dict(in_channels=[128, 256, 512], expansion=0.5),
                  dec=dict(num_layers=3)),
    'r34vd': dict(depth=34, enc=dict(in_channels=[128, 256, 512], expansion=0.5),
                  dec=dict(num_layers=4)),
    'r50vd_m': dict(depth=50, enc=dict(expansion=0.5), dec=dict(eval_idx=2)),
    'r50vd': dict(depth=50, enc=dict(), dec=dict()),
    'r101vd': dict(depth=101, enc=dict(hidden_dim=384, dim_feedforward=2048),
                   dec=dict(feat_channels=[384, 384, 384])),
    # test-data model: R18-vd backbone, 32-wide encoder/decoder, 2 heads, 2 decoder layers
    'tiny': dict(depth=18,
                 enc=dict(in_channels=[128, 256, 512], hidden_dim=32, nhead=2,
                          dim_feedforward=64, expansion=0.5, depth_mult=0.34),
                 dec=dict(feat_channels=[32, 32, 32], hidden_dim=32, nhead=2, num_layers=2,
                          dim_feedforward=64, num_queries=30, num_points=[4, 2, 3],
                          num_denoising=10)),
}
_ENC_DEFAULTS = dict(in_channels=[512, 1024, 2048], feat_strides=[8, 16, 32], hidden_dim=256,
                     nhead=8, dim_feedforward=1024, dropout=0.0, enc_act='gelu',
                     use_encoder_idx=[2], num_encoder_layers=1, pe_temperature=10000,
                     expansion=1.0, depth_mult=1, act='silu')
_DEC_DEFAULTS = dict(feat_channels=[256, 256, 256], feat_strides=[8, 16, 32], hidden_dim=256,
                     num_levels=3, num_layers=6, num_queries=300, num_denoising=100,
                     label_noise_ratio=0.5, box_noise_scale=1.0, eval_idx=-1,
                     num_points=[4, 4, 4], query_select_method='default')


def import_reference(ref_root):
    """Import ``PResNet``, ``HybridEncoder``, ``RTDETRTransformerv2`` from ``ref_root``."""
    src = os.path.join(os.path.abspath(ref_root), 'src')
    for name, path in [('src', src), ('src.zoo', f'{src}/zoo'),
                       ('src.zoo.rtdetr', f'{src}/zoo/rtdetr'), ('src.nn', f'{src}/nn'),
                       ('src.nn.backbone', f'{src}/nn/backbone')]:
        mod = types.ModuleType(name)
        mod.__path__ = [path]
        sys.modules[name] = mod
    core = types.ModuleType('src.core')
    core.register = lambda *a, **k: (lambda cls: cls)
    sys.modules['src.core'] = core
    try:
        import torchvision.ops.boxes  # noqa: F401
    except ImportError:
        tv = types.ModuleType('torchvision')
        ops = types.ModuleType('torchvision.ops')
        boxes = types.ModuleType('torchvision.ops.boxes')
        boxes.box_area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        tv.ops, ops.boxes = ops, boxes
        sys.modules.update({'torchvision': tv, 'torchvision.ops': ops,
                            'torchvision.ops.boxes': boxes})
    from src.nn.backbone.presnet import PResNet
    from src.zoo.rtdetr.hybrid_encoder import HybridEncoder
    from src.zoo.rtdetr.rtdetrv2_decoder import RTDETRTransformerv2
    return PResNet, HybridEncoder, RTDETRTransformerv2


class Reference(torch.nn.Module):
    """backbone -> encoder -> decoder, the reference ``RTDETR.forward`` composition."""

    def __init__(self, classes, size, method, eval_hw):
        super().__init__()
        presnet, encoder, decoder = classes
        spec = SIZES[size]
        big = spec['depth'] >= 50
        self.backbone = presnet(depth=spec['depth'], variant='d', return_idx=[1, 2, 3],
                                num_stages=4, freeze_at=0 if big else -1, freeze_norm=big,
                                pretrained=False)
        self.encoder = encoder(**{**_ENC_DEFAULTS, **spec['enc']},
                               eval_spatial_size=list(eval_hw))
        self.decoder = decoder(**{**_DEC_DEFAULTS, **spec['dec']}, num_classes=80,
                               eval_spatial_size=list(eval_hw), cross_attn_method=method)

    def forward(self, x):
        """-> final logits, boxes, and the encoder token behind each query (the top-k of
        the encoder's class scores, the same ``torch.topk`` call the decoder makes)."""
        seen = []
        hook = self.decoder.enc_score_head.register_forward_hook(
            lambda mod, inp, out: seen.append(out))
        out = self.decoder(self.encoder(self.backbone(x)))
        hook.remove()
        tokens = torch.topk(seen[0].max(-1).values, self.decoder.num_queries, dim=-1)[1]
        return out['pred_logits'], out['pred_boxes'], tokens


def randomize(model, seed, noise, backbone_rule, class_bias=0.0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if re.search(r'(enc|dec)_score_head(\.\d+)?\.bias$', name):
                t.add_(torch.randn(t.shape, generator=gen) * noise + class_bias)
            elif backbone_rule and name.startswith('backbone.'):
                t.copy_(torch.from_numpy(synthetic_tensor(name, tuple(t.shape), 'torch')))
            elif not t.is_floating_point() or name.endswith(('anchors', 'valid_mask',
                                                             'num_points_scale')):
                continue
            elif name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.add_(torch.randn(t.shape, generator=gen) * noise)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--ref-root', required=True, help='rtdetrv2_pytorch checkout')
    p.add_argument('--size', required=True, choices=sorted(SIZES))
    p.add_argument('--input', required=True, help='uint8 HWC image .npy (square)')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--noise', type=float, default=0.02)
    p.add_argument('--class-bias', type=float, default=0.0,
                   help='added to the class-head biases (random models score ~0.01 otherwise)')
    p.add_argument('--backbone-rule', action='store_true')
    p.add_argument('--fused', action='store_true')
    args = p.parse_args()

    torch.manual_seed(args.seed)
    classes = import_reference(args.ref_root)
    image = np.load(args.input)
    hw = image.shape[:2]
    x = torch.from_numpy(image.astype('float32').transpose(2, 0, 1)[None] / 255.0)
    model = Reference(classes, args.size, 'default', hw).eval()
    randomize(model, args.seed, args.noise, args.backbone_rule, args.class_bias)
    state = model.state_dict()
    os.makedirs(args.out, exist_ok=True)
    keep = {k: v for k, v in state.items()
            if not (args.backbone_rule and k.startswith('backbone.'))}
    if args.backbone_rule:
        with open(os.path.join(args.out, 'backbone_shapes.json'), 'w') as f:
            json.dump({k: list(v.shape) for k, v in state.items() if k not in keep}, f,
                      indent=0)
    torch.save({'ema': {'module': keep, 'updates': 0}, 'last_epoch': 0},
               os.path.join(args.out, 'checkpoint.pth'))
    outputs = {}
    for method in ('default', 'discrete'):
        m = Reference(classes, args.size, method, hw).eval()
        m.load_state_dict(state)
        with torch.no_grad():
            logits, boxes, tokens = m(x)
        outputs[f'{method}_logits'], outputs[f'{method}_boxes'] = logits.numpy(), boxes.numpy()
        outputs[f'{method}_tokens'] = tokens.numpy()
        if args.fused and method == 'default':
            for layer in m.modules():   # RepVggBlock.convert_to_deploy adds .conv
                if hasattr(layer, 'convert_to_deploy'):
                    layer.convert_to_deploy()
            with torch.no_grad():
                logits_f = m(x)[0]
            outputs['fused_default_logits'] = logits_f.numpy()
            fused = {k: v for k, v in m.state_dict().items() if k not in state}
            torch.save(fused, os.path.join(args.out, 'fused_convs.pth'))
    np.savez(os.path.join(args.out, 'outputs.npz'), **outputs)
    print(f"torch {torch.__version__}: {args.size} at {hw[0]}x{hw[1]} -> {args.out}")


if __name__ == '__main__':
    main()
