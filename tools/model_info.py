"""Print parameter counts and GFLOPs of detection configs at a fixed input size.

How FLOPs and parameters are counted: ``ppdet_ext/export/model_stats.py``.

Examples:
    python tools/model_info.py -c configs/rtdetrv2/rtdetrv2_r18vd_120e_coco.yml
    python tools/model_info.py -c configs/rtdetrv2/*.yml --size 640 640
    python tools/model_info.py -c configs/rtdetrv2/rtdetrv2_r50vd_6x_coco.yml --no-flops
"""
import argparse
import sys

import ppdet_ext  # noqa: F401  (zlib before paddle; registers our modules)
from ppdet.core.workspace import create

from ppdet_ext.engine.config import load_config
from ppdet_ext.export.model_stats import count_macs, count_params

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
