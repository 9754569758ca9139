"""Convert a Paddle-exported PP-PicoDet ONNX file (BN folded) into ppdet PicoDet weights.

Maps every ONNX Conv onto the ppdet model's convs by execution order (checked by shape,
stride, padding, groups and the Paddle names the export kept), loads the folded weights
with identity BatchNorms, saves a .pdparams, and optionally checks the result against the
ONNX file on real images (--verify N).
"""
import argparse
import os
import sys

import ppdet_ext  # noqa: F401  (before paddle: see ppdet_ext/compat/zlib_first.py)
from ppdet_ext_deploy.imageio import list_images

EXAMPLES = [
    "python tools/convert_picodet_onnx.py --onnx ../shared/data/models/picodet_s_416_coco.onnx "
    "--config configs/picodet/picodet_s_416_coco_ext.yml "
    "--out output/weights/picodet_s_416_coco.pdparams --verify 4",
    "python tools/convert_picodet_onnx.py --onnx ../shared/data/models/picodet_s_320_coco.onnx "
    "--config configs/picodet/picodet_s_320_coco_ext.yml "
    "--out output/weights/picodet_s_320_coco.pdparams",
]


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES))
    p.add_argument("--onnx", required=True, help="Paddle-exported PicoDet ONNX file")
    p.add_argument("--config", required=True, help="ppdet config of the matching PicoDet")
    p.add_argument("--out", required=True, help="output .pdparams path")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="compare with the ONNX file on N images (0: skip)")
    p.add_argument("--images", default="../shared/data/coco_val158/images",
                   help="image folder for --verify")
    p.add_argument("--per-conv", action="store_true",
                   help="with --verify: also compare every conv output on the first image")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from ppdet_ext.convert import convert_picodet_onnx, onnx_input_hw, save_weights

    if not os.path.isfile(args.onnx):
        sys.stderr.write(f"error: ONNX file not found: {args.onnx}\n")
        return 2
    try:
        model, report = convert_picodet_onnx(args.onnx, args.config)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    print(report.summary())
    print(f"saved {save_weights(model, args.out)}")
    if args.verify > 0:
        from ppdet_ext.convert import trace_conv_slots
        from ppdet_ext.convert.parity import compare_per_conv, compare_raw, preprocess_image

        paths = list_images(args.images, args.verify, require=False)
        if not paths:
            sys.stderr.write(f"error: no images in {args.images}\n")
            return 2
        size = onnx_input_hw(args.onnx)[0]
        images = [preprocess_image(p, size) for p in paths]
        diffs = compare_raw(model, args.onnx, images)
        print(f"ONNX vs dygraph, max abs diff over {len(images)} images:")
        for key, value in diffs.items():
            print(f"  {key:12s} {value:.3g}")
        if args.per_conv:
            slots = trace_conv_slots(model, onnx_input_hw(args.onnx))
            per = compare_per_conv(model, args.onnx, images[0], slots)
            worst = max(range(len(per)), key=lambda k: per[k][0] / max(per[k][1], 1e-12))
            print(f"per conv ({len(per)}): max abs diff {max(d for d, _ in per):.3g}, "
                  f"max relative {per[worst][0] / max(per[worst][1], 1e-12):.3g} "
                  f"(#{worst} {slots[worst].name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
