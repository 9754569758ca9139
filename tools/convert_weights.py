"""Convert a published RT-DETRv2 checkpoint into weights for our config.

Sources: rtdetrv2_pytorch (lyuwenyu/RT-DETR) ``.pth`` files (a state dict or a training
checkpoint: its ``ema`` entry by default, ``--entry model`` for the raw one) and
PaddleDetection develop RT-DETRv2 ``.pdparams``. The layout is recognised from the file.
torch is not needed, and no code from the file runs (ppdet_ext.weights.load_state).

Prints which transforms were applied (Linear transposes, packed q/k/v split, BatchNorm
statistic names, RepVGG unfusing, class rows / label mapping) and every unmapped, missing
or shape-mismatched tensor; exits 1 and writes nothing unless every tensor maps.
"""
import os
import sys

import ppdet_ext  # noqa: F401  (before paddle: see ppdet_ext/compat/zlib_first.py)
from ppdet_ext.engine import cli

EXAMPLES = [
    "python tools/convert_weights.py -c configs/rtdetrv2/rtdetrv2_r18vd_120e_coco.yml "
    "--src rtdetrv2_r18vd_120e_coco_rerun_48.1.pth --out weights/rtdetrv2_r18vd_120e_coco",
    "python tools/convert_weights.py -c configs/rtdetrv2/rtdetrv2_r50vd_6x_coco.yml "
    "--src rtdetrv2_r50vd_6x_coco.pdparams --out weights/rtdetrv2_r50vd_6x_coco",
    "python tools/convert_weights.py -c configs/rtdetrv2/rtdetrv2_r18vd_dsp_3x_coco.yml "
    "--src rtdetrv2_r18vd_dsp_3x_coco.pth --entry model --out weights/r18_dsp",
]


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--src", required=True, help="checkpoint: .pth (rtdetrv2_pytorch) or "
                   ".pdparams (PaddleDetection develop)")
    p.add_argument("--out", required=True, help="output weights (.pdparams appended)")
    p.add_argument("--entry", choices=["auto", "ema", "model"], default="auto",
                   help="entry of a training checkpoint (auto: ema if present)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from ppdet_ext.convert.rtdetrv2_weights import convert_rtdetrv2_file
    from ppdet_ext.weights import WeightsFormatError

    cli.load(args)      # validates the config and the -o overrides (exit 2 on error)
    if not os.path.isfile(args.src):
        sys.stderr.write(f"error: checkpoint not found: {args.src}\n")
        return 2
    try:
        report, saved = convert_rtdetrv2_file(args.src, args.config, args.out,
                                              entry=args.entry, overrides=args.opt)
    except WeightsFormatError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    print("\n".join(report.lines()))
    if saved is None:
        sys.stderr.write("error: not every tensor maps; nothing written\n")
        return 1
    print(f"saved {saved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
