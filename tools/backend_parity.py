"""Parity of one model across engines: dygraph vs Paddle Inference vs ONNX Runtime vs RKNN sim.

Exports the model once at a fixed [1, 3, H, W] (RKNN needs fixed shapes) into --work_dir,
feeds the same preprocessed images to every engine and writes max-abs-diff of scores and boxes
to --out (JSON). The RKNN simulator (fp16) runs when the optional .venv-rknn is present.
"""
import argparse
import json
import os
import sys

import ppdet_ext  # noqa: F401  (zlib before paddle)
from ppdet_ext.engine import cli
from ppdet_ext.export.backend_parity import run_parity

EXAMPLES = [
    "python tools/backend_parity.py -c configs/gfl/gfl_tiny_coco_mini.yml --input_shape 320 320 "
    "--images ../shared/data/coco_val158/images --work_dir output/parity/gfl "
    "--out docs/results/onnx_rknn/parity_gfl.json",
    "python tools/backend_parity.py -c configs/rtdetrv2/rtdetrv2_tiny_coco_mini.yml "
    "-o ExtRTDETRDecoder.sampling_method=discrete --split --input_shape 640 640 "
    "--work_dir output/parity/rtdetr_discrete --out /tmp/p.json",
]


def main(argv=None):
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--work_dir", required=True, help="export directory to (re)write")
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--input_shape", nargs=2, type=int, default=[320, 320], metavar=("H", "W"))
    p.add_argument("--images", default=None, help="image folder (default: seeded noise)")
    p.add_argument("--num_images", type=int, default=2)
    p.add_argument("--split", action="store_true", help="RT-DETR: export the NPU/CPU split")
    p.add_argument("--random_init", action="store_true",
                   help="ignore the config's weights (default: use them when the file exists)")
    p.add_argument("--match_queries", action="store_true",
                   help="DETR: pair output queries by box before diffing (set outputs)")
    p.add_argument("--no_rknn", action="store_true", help="skip the RKNN simulator")
    p.add_argument("--disable_rules", nargs="*", default=[], help="rknn optimizer rules to disable")
    args = p.parse_args(argv)
    cfg, _ = cli.load(args)
    weights = cfg.get("weights")
    exists = bool(weights) and os.path.isfile(str(weights) + ".pdparams")
    if not exists and any(o.startswith("weights=") for o in args.opt):
        sys.stderr.write(f"backend_parity: weights {weights}.pdparams not found\n")
        return 1
    if args.random_init or not exists:  # the config's default checkpoint may not exist here
        weights = None
    res = run_parity(cfg, args.work_dir, weights=weights, input_shape=args.input_shape, image_dir=args.images,
        num_images=args.num_images, split=args.split, rknn=not args.no_rknn,
        rknn_options={"disable_rules": tuple(args.disable_rules)} if args.disable_rules else None,
        match_queries=args.match_queries)
    res["command"] = "python tools/backend_parity.py " + " ".join(argv or sys.argv[1:])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
