"""Print parameter counts and GFLOPs of detection configs at a fixed input size.

FLOPs = 2 x multiply-accumulates (the convention of the published RT-DETR table),
counted on the static graph of the inference forward (``export_raw``), per op, for
``conv2d``/``depthwise_conv2d`` (out elements x Cin/groups x kh x kw) and
``matmul``/``matmul_v2`` (out elements x reduced dim). Element-wise ops, norms,
softmax and the sampling ops are left out (well under 1% of the total here).
Parameters exclude BatchNorm running statistics.

Examples:
    python tools/model_info.py -c configs/rtdetrv2/rtdetrv2_r18vd_120e_coco.yml
    python tools/model_info.py -c configs/rtdetrv2/*.yml --size 640 640
    python tools/model_info.py -c configs/rtdetrv2/rtdetrv2_r50vd_6x_coco.yml --no-flops
"""
import argparse
import sys

import ppdet_ext  # noqa: F401  (zlib before paddle; registers our modules)
import paddle
from ppdet.core.workspace import create

from ppdet_ext.engine.config import load_config

_STAT_SUFFIXES = ('_mean', '_variance')


def count_params(model):
    """Number of parameters of ``model`` without BatchNorm running statistics."""
    return sum(int(p.numel()) for n, p in model.named_parameters()
               if not n.endswith(_STAT_SUFFIXES))


def _prod(shape):
    out = 1
    for s in shape:
        out *= int(s)
    return out


def _op_macs(op, block):
    def shape(slot):
        return list(block._var_recursive(op.input(slot)[0] if slot in op.input_names
                                         else op.output(slot)[0]).shape)
    if op.type in ('conv2d', 'depthwise_conv2d'):
        out = shape('Output')
        k = shape('Filter')                  # [Cout, Cin/groups, kh, kw]
        return _prod(out) * k[1] * k[2] * k[3]
    if op.type in ('matmul_v2', 'matmul'):
        x = shape('X')
        out = shape('Out')
        trans_x = op.attr('trans_x') if op.has_attr('trans_x') else op.attr('transpose_X')
        reduced = x[-2] if (trans_x and len(x) > 1) else x[-1]
        return _prod(out) * int(reduced)
    return 0


def count_macs(model, height, width):
    """Multiply-accumulates of ``model.export_raw`` on a ``[1, 3, height, width]`` input."""

    class _Forward(paddle.nn.Layer):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image):
            return self.inner.export_raw(image)

    model.eval()
    spec = [paddle.static.InputSpec([1, 3, height, width], 'float32', 'image')]
    static = paddle.jit.to_static(_Forward(model), input_spec=spec, full_graph=True)
    program = static.forward.concrete_program.main_program
    total = 0
    for block in program.blocks:
        for op in block.ops:
            total += _op_macs(op, block)
    return total


def model_info(config, height=640, width=640, flops=True):
    """``{'config', 'params', 'gflops'}`` for one config (``gflops`` None if not counted)."""
    cfg, _ = load_config(config)
    model = create(cfg.architecture)
    info = {'config': config, 'params': count_params(model), 'gflops': None}
    if flops and not hasattr(model, 'export_raw'):
        raise ValueError(f"{config}: {cfg.architecture} has no export_raw(image); "
                         "FLOPs are counted on that graph (use --no-flops)")
    if flops:
        info['gflops'] = 2 * count_macs(model, height, width) / 1e9
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-c', '--config', nargs='+', required=True, help='config file(s)')
    parser.add_argument('--size', nargs=2, type=int, default=[640, 640],
                        metavar=('H', 'W'), help='input size (default 640 640)')
    parser.add_argument('--no-flops', action='store_true', help='count parameters only')
    args = parser.parse_args(argv)
    print(f"{'config':45s} {'params(M)':>10s} {'GFLOPs':>8s}")
    for config in args.config:
        try:
            info = model_info(config, *args.size, flops=not args.no_flops)
        except ValueError as e:
            sys.stderr.write(f"error: {e}\n")
            return 2
        gf = '-' if info['gflops'] is None else f"{info['gflops']:.1f}"
        print(f"{config.split('/')[-1]:45s} {info['params'] / 1e6:10.2f} {gf:>8s}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
